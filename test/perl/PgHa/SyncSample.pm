
# PgHa::SyncSample: sample the sync key and the leader's
# synchronous_standby_names together, and judge each sample by the rule
# src/ha_sync.c keeps (test/t/345).
#
#   my $s = sync_sampler($etcd, $leader, "$dir/samples");   # a child process
#   ...                                                      # change things
#   $s->stop;
#   my @samples = read_samples("$dir/samples");
#   for (grep { sample_stable($_) } @samples) {
#       my $why = sample_violation($_, leader => 'node1');  # undef: it holds
#   }
#
# A sample is: the sync key (value and mod_revision), then, over a new
# connection to the leader, synchronous_standby_names as postgres has it
# in effect and every WAL sender's own view (pg_stat_replication), then
# the key again.  When both reads of the key are the same revision, the
# key held that value all through the query, so the rule must hold
# between it and what the query saw.
#
# The rule (ha_sync.c's header): with the key {sync_standby: V, quorum: q}
# any q + 1 members of V include one that holds every commit postgres
# acknowledges, i.e. one that confirmed it.  Postgres acknowledges a
# commit once k members of S confirm it (ANY k (S); FIRST k (S) lets the
# first k connected ones confirm, so any k of S, too).  Some q + 1 members
# of V miss a k-subset of S exactly when |S \ Q| >= k for some such Q, and
# the Q that takes the most names outside S leaves |S| - max(0, q + 1 -
# |V \ S|) of S; so the rule holds iff
#     |V| <= q  (no q + 1 members: nobody may be promoted)
#  or k + q >= |S u V|.
# In on/strict mode (q = 0) that is "V within S and k = |S|": every
# listed node is one postgres waits for.

package PgHa::SyncSample;

use strict;
use warnings;

use Exporter 'import';
use IO::Socket::INET ();
use JSON::PP ();
use MIME::Base64 ();
use POSIX ();
use Time::HiRes ();

our @EXPORT = qw(sync_sampler read_samples sample_stable sample_key
  ssn_parse sample_violation);

my $SQL =
    "SELECT current_setting('synchronous_standby_names'), "
  . "coalesce((SELECT json_agg(json_build_object('name', application_name, "
  . "'state', state, 'sync_state', sync_state, 'priority', sync_priority, "
  . "'flush', flush_lsn)) "
  . "FROM pg_catalog.pg_stat_replication), '[]')";

=pod

=over

=item sync_sampler($etcd, $leader, $file, key => $etcd_key)

(etcd over plain http, as PgHa::Etcd starts it without tls.)

Fork a child that samples until stop() is called, one JSON line per sample
in C<$file>: t1, k1, r1 (key value and mod_revision, null when absent),
ts, te, ssn, senders (the query's time, synchronous_standby_names and
pg_stat_replication rows name/state/sync_state/priority/flush), t2, k2, r2;
err when a read failed.  C<key> defaults to the cluster's sync key.

=cut

sub sync_sampler
{
	my ($etcd, $leader, $file, %p) = @_;
	my $key = $p{key} // $leader->ha_key('sync');
	my $stop = "$file.stop";
	unlink $stop;
	my $parent = $$;
	my $pid = fork() // die "fork: $!";
	if ($pid == 0)
	{
		# the child: never runs the parent's END blocks (they stop servers)
		$SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
		eval { _sample_loop($etcd, $leader, $file, $key, $stop, $parent); };
		POSIX::_exit(0);
	}
	return bless { pid => $pid, stop => $stop, file => $file }, 'PgHa::SyncSample::Sampler';
}

# One linearizable read of $key through etcd's JSON gateway: (value,
# mod_revision), (undef, 0) when absent.  An etcdctl process per read, or
# HTTP::Tiny's two writes per request (Nagle against delayed ACKs: 40 ms),
# would make samples few and far between; one HTTP/1.0 write does not.
sub _read_key
{
	my ($hostport, $key) = @_;
	my $body = JSON::PP::encode_json({ key => MIME::Base64::encode_base64($key, '') });
	my $sock = IO::Socket::INET->new(PeerAddr => $hostport, Timeout => 5)
	  or die "etcd $hostport: $!\n";
	$sock->syswrite("POST /v3/kv/range HTTP/1.0\r\nHost: $hostport\r\n"
		  . "Content-Type: application/json\r\nContent-Length: " . length($body)
		  . "\r\n\r\n$body");
	my $resp = '';
	while ($sock->sysread(my $buf, 65536)) { $resp .= $buf; }
	close $sock;
	my ($status, $content) = $resp =~ m{^HTTP/\S+ (\d+).*?\r\n\r\n(.*)$}s;
	die "etcd range $key: " . ($resp =~ /^([^\r\n]*)/)[0] . "\n" unless ($status // 0) == 200;
	my $kv = (JSON::PP::decode_json($content)->{kvs} // [])->[0]
	  or return (undef, 0);
	return (MIME::Base64::decode_base64($kv->{value} // ''), "$kv->{mod_revision}");
}

sub _sample_loop
{
	my ($etcd, $leader, $file, $key, $stop, $parent) = @_;
	open my $fh, '>>', $file or die "$file: $!";
	$fh->autoflush(1);
	my $json = JSON::PP->new->canonical;
	my ($hostport) = $etcd->endpoints =~ m{^http://([^/,]+)}
	  or die 'etcd without tls expected: ' . $etcd->endpoints;
	while (!-e $stop && getppid() == $parent)
	{
		my %s = (t1 => Time::HiRes::time());
		eval {
			@s{qw(k1 r1)} = _read_key($hostport, $key);
			$s{ts} = Time::HiRes::time();
			my $out = $leader->safe_psql('postgres', $SQL);
			$s{te} = Time::HiRes::time();
			my ($ssn, $senders) = split /\|/, $out, 2;
			$s{ssn}     = $ssn // '';
			$s{senders} = JSON::PP::decode_json($senders // '[]');
			@s{qw(k2 r2)} = _read_key($hostport, $key);
			1;
		} or do { ($s{err} = $@ || 'failed') =~ s/\s+$//; };
		$s{t2} = Time::HiRes::time();
		print $fh $json->encode(\%s), "\n";
	}
	close $fh;
	return;
}

# Stop the sampler (it finishes its current sample): at most 20 s.
sub PgHa::SyncSample::Sampler::stop
{
	my ($self) = @_;
	return unless $self->{pid};
	if (open my $fh, '>', $self->{stop}) { close $fh; }
	for (1 .. 200)
	{
		last if waitpid($self->{pid}, POSIX::WNOHANG()) != 0;
		Time::HiRes::sleep(0.1);
	}
	if (kill 0, $self->{pid})
	{
		kill 'KILL', $self->{pid};
		waitpid($self->{pid}, 0);
	}
	$self->{pid} = undef;
	return;
}

sub PgHa::SyncSample::Sampler::DESTROY { $_[0]->stop; }

=item read_samples($file)

The samples, oldest first (hash references as written).

=item sample_stable($s)

True when both key reads succeeded and saw the same revision.

=item sample_key($s)

The key of a stable sample as { leader, voters => [lower-case names],
quorum, text => "node2,node3 q1" } (voters empty when the key is absent).

=cut

sub read_samples
{
	my ($file) = @_;
	open my $fh, '<', $file or return ();
	my @s;
	while (my $line = <$fh>)
	{
		my $s = eval { JSON::PP::decode_json($line) } or next;
		push @s, $s;
	}
	close $fh;
	return @s;
}

sub sample_stable
{
	my ($s) = @_;
	return !defined $s->{err} && "$s->{r1}" eq "$s->{r2}"
	  && ($s->{k1} // '') eq ($s->{k2} // '');
}

sub sample_key
{
	my ($s) = @_;
	my $k = defined $s->{k1} ? JSON::PP::decode_json($s->{k1}) : {};
	my @v = map { lc } grep { length } split /\s*,\s*/, $k->{sync_standby} // '';
	my $q = $k->{quorum} // 0;
	return {
		leader => $k->{leader} // '',
		voters => \@v,
		quorum => $q,
		quorum_field => exists $k->{quorum} ? 1 : 0,
		text   => (@v ? join(',', @v) : 'null') . (exists $k->{quorum} ? " q$q" : ''),
	};
}

=item ssn_parse($text)

synchronous_standby_names as { num => k, names => [lower-case names] }:
'FIRST k (...)', 'ANY k (...)', 'k (...)' or a plain list (FIRST 1).  k
is capped at the number of names; '' gives k = 0 and no names.

=cut

sub ssn_parse
{
	my ($text) = @_;
	$text //= '';
	$text =~ s/^\s+|\s+$//g;
	return { num => 0, names => [] } if $text eq '';
	my ($num, $list) = (1, $text);
	($num, $list) = ($1, $2) if $text =~ /^(?:(?:FIRST|ANY)\s+)?(\d+)\s*\((.*)\)$/is;
	my @names;
	for my $n (split /,/, $list)
	{
		$n =~ s/^\s+|\s+$//g;
		$n =~ s/^"(.*)"$/$1/;
		push @names, lc $n if length $n;
	}
	$num = @names if $num > @names;
	return { num => $num, names => \@names };
}

=item sample_violation($s, leader => 'node1')

Undef when the stable sample C<$s> keeps the rule (file header), else why
not.  Checked against synchronous_standby_names (S, k) as a new session
has it, and against the WAL senders: those that count their standby
(priority > 0) and the listed standbys not connected, or connected
without a flush position yet (their WAL senders would count them), must
keep it with the same k; and with q = 0 every connected listed node's
WAL sender must count it.

=back

=cut

sub _union
{
	my %u = map { $_ => 1 } map { @$_ } @_;
	return scalar keys %u;
}

sub sample_violation
{
	my ($s, %p) = @_;
	my $key = sample_key($s);
	my @v   = @{ $key->{voters} };
	my $q   = $key->{quorum};
	return "the sync key names leader \"$key->{leader}\", not $p{leader}"
	  if @v && defined $p{leader} && $key->{leader} ne $p{leader};
	return undef if @v <= $q;
	my $ssn = ssn_parse($s->{ssn});
	my ($k, @S) = ($ssn->{num}, @{ $ssn->{names} });
	return sprintf('k + q = %d + %d < |S u V| = %d', $k, $q, _union(\@S, \@v))
	  if $k + $q < _union(\@S, \@v);
	# a WAL sender that has no flush position yet shows priority 0 whatever
	# its setting: count it as not connected
	my %connected = map { lc($_->{name} // '') => $_ }
	  grep { defined $_->{flush} } @{ $s->{senders} // [] };
	my @counting = grep { $connected{$_}{priority} > 0 } keys %connected;
	my @w = (@counting, grep { !$connected{$_} } @S);
	return sprintf('WAL senders: k + q = %d + %d < |W u V| = %d (W = %s)',
		$k, $q, _union(\@w, \@v), join(',', sort @w))
	  if $k + $q < _union(\@w, \@v);
	if ($q == 0)
	{
		my @not = grep { $connected{$_} && $connected{$_}{priority} <= 0 } @v;
		return 'listed, but their WAL senders do not count them: ' . join(',', @not)
		  if @not;
	}
	return undef;
}

1;
