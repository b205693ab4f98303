
# The health API answers as Patroni 3.0.2's api.py does where pg_ha used to
# differ (issue 13): a path it does not know answers 503, not 404 (HAProxy
# marks the server down either way, but scripts compare codes); and
# ?tag_<name>=<value> filters on the node's tags with Patroni's rules:
# every tag named must be one the node has, with that value (non-strings
# compared as their lower-case text); a user tag comes from pg_ha.tags.
# Patroni registers nofailover, noloadbalance, nosync and clonefrom only
# when true (patroni/__main__.py get_tags), so ?tag_nofailover=false is
# 503 there as here, and ?tag_nofailover=true is 200 on a tagged node.

use strict;
use warnings;

use Test::More;
use JSON::PP ();
use HTTP::Tiny ();
use PgHa::Etcd;
use PgHa::Cluster;
use PgHa::Failover;
use PgHa::Patroni;
use PgHa::Test;

my $etcd = PgHa::Etcd->new(members => 1);
my ($n1, $n2) = ha_cluster(
	etcd         => $etcd,
	ttl          => 5,
	nodes        => 2,
	replica_conf => "pg_ha.tags = '{\"dc\": \"east\", \"rack\": 2, \"ssd\": true}'\n"
	  . "pg_ha.nofailover = off\n");

# unknown paths: 503 for GET, HEAD and OPTIONS, as Patroni's do_GET fallback
for my $m (qw(GET HEAD OPTIONS))
{
	is(api_request($n1, $m, '/no-such-endpoint')->{code}, '503', "$m of an unknown path: 503");
}
is(api_request($n2, 'GET', '/foo/bar')->{code}, '503', 'GET of a nested unknown path: 503');

# user tags from pg_ha.tags
is(health_status($n2, '/replica?tag_dc=east'), 200, 'replica ?tag_dc=east matches: 200');
is(health_status($n2, '/replica?tag_dc=west'), 503, 'replica ?tag_dc=west differs: 503');
is(health_status($n2, '/replica?tag_rack=2'), 200, 'a number compares as its text: 200');
is(health_status($n2, '/replica?tag_ssd=true'), 200, 'a boolean compares as lower-case text: 200');
is(health_status($n2, '/replica?tag_dc=east&tag_ssd=true'), 200, 'several tags, all matching: 200');
is(health_status($n2, '/replica?tag_dc=east&tag_ssd=false'), 503, 'several tags, one differing: 503');
is(health_status($n2, '/replica?tag_zone=a'), 503, 'a tag the node does not have: 503');
is(health_status($n2, '/read-only?tag_dc=east'), 200, '/read-only honours tags too');
is(health_status($n1, '/primary?tag_dc=west'), 200, '/primary ignores tags, as in Patroni');

# Patroni's built-in tags are registered only when true
is(health_status($n2, '/replica?tag_nofailover=false'), 503,
	'nofailover off is not a registered tag (Patroni 3.0.2 get_tags): 503');
is(health_status($n2, '/replica?tag_nofailover=true'), 503, 'nofailover is not set: 503');

# the tags travel in /patroni and in the member key
my $st = api_request($n2, 'GET', '/patroni')->{json} // {};
is_deeply($st->{tags}, { dc => 'east', rack => 2, ssd => JSON::PP::true },
	'/patroni lists the user tags');
wait_ok(sub { my $m = member_json($etcd, 'node2'); $m && $m->{tags} && ($m->{tags}{dc} // '') eq 'east' },
	'the member key carries the user tags', timeout => 20);

# a tagged nofailover node answers ?tag_nofailover=true
$n2->append_conf('postgresql.conf', "pg_ha.nofailover = on\n");
$n2->reload;
wait_ok(sub { health_status($n2, '/replica?tag_nofailover=true') == 200 },
	'nofailover on: ?tag_nofailover=true is 200', timeout => 10);
is(health_status($n2, '/replica?tag_nofailover=false'), 503, 'and ?tag_nofailover=false is 503');

# a bad pg_ha.tags is refused when it is set
my ($ok, $state, $err) = try_sql($n1, "ALTER SYSTEM SET pg_ha.tags = '[1,2]'");
ok(!$ok, 'pg_ha.tags must be a JSON object');
like($err // '', qr/pg_ha\.tags/, 'the error names the parameter');

done_testing();
