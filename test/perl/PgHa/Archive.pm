
# PgHa::Archive: postgresql.conf settings shared by the archive TAP suites.
#
# Those suites need no etcd: pg_ha's worker points at a dead port, writes
# stay allowed (pg_ha.fencing = off) and no listener takes a fixed port.

package PgHa::Archive;

use strict;
use warnings;

use Exporter 'import';
our @EXPORT = qw(archive_conf);

=pod

=item archive_conf(repo => $dir, name => 'node', mode => 'on')

The lines that make a node archive through pg_ha into C<repo>;
C<name> sets pg_ha.node_name when given, C<mode> is archive_mode.

=cut

sub archive_conf
{
	my (%p) = @_;
	my $mode = $p{mode} // 'on';
	my $name = defined $p{name} ? "pg_ha.node_name = '$p{name}'\n" : '';
	return <<"EOC";
shared_preload_libraries = 'pg_ha'
pg_ha.etcd_endpoints = 'http://127.0.0.1:9'
pg_ha.etcd_timeout = 200
pg_ha.cluster = 'archtest'
${name}pg_ha.api_listen = ''
pg_ha.fencing = off
pg_ha.metrics_listen = ''
archive_mode = $mode
archive_library = 'pg_ha'
pg_ha.archive_repo = '$p{repo}'
EOC
}

1;
