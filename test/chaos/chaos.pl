#!/usr/bin/perl
# pg_ha chaos suite: randomized fault injection on a real 3-member etcd and 3
# postgres nodes with pg_ha, on loopback.  Run as root, after `make install`:
#
#   make chaos RUNS=200 SEED=1 [MODE=async]
#   perl test/chaos/chaos.pl --runs 200 --seed 1 --build test/chaos/build
#
# Run i uses seed SEED+i-1 and prints it: `make chaos RUNS=1 SEED=<seed>`
# replays that run (same faults, targets and durations).  See
# test/chaos/README.md for the cluster, the workload, the faults and the
# checks; ChaosCheck.pm holds the verdict.
#
# Root is needed for iptables (cutting a node from etcd or from its
# replicas); postgres runs as an unprivileged user (--user, default
# postgres) through setpriv.  Every process is tracked by PID and stopped by
# PID, also when the harness is interrupted.

use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use ChaosCheck;

use File::Copy qw(copy);
use File::Path qw(make_path remove_tree);
use Getopt::Long;
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP;
use MIME::Base64 qw(encode_base64 decode_base64);
use POSIX qw(:sys_wait_h setsid);
use Time::HiRes qw(clock_gettime CLOCK_MONOTONIC usleep);

my %opt = (
	runs  => 1,
	seed  => 1,
	mode  => 'async',
	user  => 'postgres',
	ttl   => 5,
	out   => '/var/tmp/pg_ha_chaos',
	build => "$FindBin::Bin/build",
	keep  => 0);
GetOptions(\%opt, 'runs=i', 'seed=i', 'mode=s', 'user=s', 'ttl=i', 'out=s', 'build=s',
	'keep!', 'only=s')
  or die "usage: $0 [--runs N] [--seed S] [--mode MODE] [--out DIR] [--only FAULT]\n";

# Settings of each mode, added to every node's configuration ('%A': the
# run's API password file).  The checker fails every lost acknowledged write
# in the lossless modes (sync, quorum); in the others it counts the losses of
# unplanned failovers.  nofence is the checker's check: with fencing off a
# primary cut from its lease keeps committing, and check 1 must fail.
my %MODE_CONF = (
	async    => '',
	sync     => "pg_ha.synchronous_mode = on\n",
	quorum   => "pg_ha.synchronous_mode = quorum\n",
	failsafe => "pg_ha.failsafe_mode = on\npg_ha.api_auth_file = '%A'\n",
	nofence  => "pg_ha.fencing = off\n");
my %LOSSLESS = (sync => 1, quorum => 1);
# mixed: the runs take the modes in turn, by seed
my @MIXED = qw(async sync quorum failsafe);
die "chaos: unknown mode '$opt{mode}' (known: @{[ sort keys %MODE_CONF ]} mixed)\n"
  unless exists $MODE_CONF{ $opt{mode} } || $opt{mode} eq 'mixed';
sub mode_of_seed { my ($seed) = @_; return $opt{mode} eq 'mixed' ? $MIXED[ $seed % @MIXED ] : $opt{mode}; }
die "chaos: run as root (iptables; postgres itself runs as $opt{user})\n" unless $> == 0;

my $PG_CONFIG = $ENV{PG_CONFIG} || 'pg_config';
chomp(my $BINDIR = `$PG_CONFIG --bindir`);
die "chaos: pg_config failed\n" unless $BINDIR && -x "$BINDIR/postgres";
die "chaos: $BINDIR/pg_hactl missing: run make install first\n" unless -x "$BINDIR/pg_hactl";
$ENV{PATH} = "$BINDIR:$ENV{PATH}";
for my $f ('chaos_client', 'fsync_shim.so')
{
	die "chaos: $opt{build}/$f missing (make chaos builds it)\n" unless -e "$opt{build}/$f";
}
my ($PG_UID, $PG_GID) = (getpwnam($opt{user}))[ 2, 3 ];
die "chaos: no user $opt{user}\n" unless defined $PG_UID && $PG_UID != 0;

my $TTL   = $opt{ttl};
my $CHAIN = 'PGHA_CHAOS';
my $WORK  = "/tmp/pg_ha_chaos.$$";
my $http  = HTTP::Tiny->new(timeout => 2);

# ------------------------------------------------------------ bookkeeping
my %procs;      # pid => kind: our direct children (reaped by us: PIDs stay ours)
my %stopped;    # pid => 1: processes we SIGSTOPped
my $R;          # the run in progress
my $cleaning = 0;
my $interrupted = 0;    # a signal arrived: every wait gives up (evals must not swallow it)

sub mono { return clock_gettime(CLOCK_MONOTONIC); }

sub event
{
	my ($msg) = @_;
	return unless $R;
	my $line = sprintf("%.3f +%.1fs %s", mono(), mono() - $R->{t0}, $msg);
	push @{ $R->{events} }, $line;
	if (open my $fh, '>>', "$R->{dir}/events.log") { print $fh "$line\n"; close $fh; }
	print STDERR "  $line\n" if $ENV{CHAOS_VERBOSE};
}

# fork + exec, with stdout/stderr appended to $log; returns the PID.
sub spawn
{
	my (%p) = @_;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		eval {
			setsid() if $p{setsid};
			open STDIN, '<', '/dev/null' or die;
			open STDOUT, '>>', $p{log} or die "$p{log}: $!";
			open STDERR, '>&', \*STDOUT or die;
			$ENV{$_} = $p{env}{$_} for keys %{ $p{env} // {} };
			exec { $p{cmd}[0] } @{ $p{cmd} };
		};
		POSIX::_exit(127);
	}
	$procs{$pid} = $p{kind} // 'proc';
	return $pid;
}

sub as_pg
{
	return ('setpriv', "--reuid=$PG_UID", "--regid=$PG_GID", '--init-groups', '--', @_);
}

# Run a command to completion (as the postgres user with as_pg); output to
# $log.  Returns the exit status.
sub run_cmd
{
	my ($log, @cmd) = @_;
	my $pid = spawn(cmd => \@cmd, log => $log, kind => 'cmd');
	waitpid($pid, 0);
	delete $procs{$pid};
	return $? >> 8;
}

sub alive
{
	my ($pid) = @_;
	return 0 unless $pid;
	open my $fh, '<', "/proc/$pid/stat" or return 0;
	my $s = <$fh> // '';
	my ($state) = $s =~ /\)\s+(\S)/;
	return defined $state && $state ne 'Z' && $state ne 'X';
}

sub starttime
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/stat" or return undef;
	my $s = <$fh> // '';
	my ($rest) = $s =~ /\)\s+(.*)$/s or return undef;
	return (split /\s+/, $rest)[19];
}

sub children_of
{
	my ($ppid) = @_;
	my @kids;
	opendir my $d, '/proc' or return ();
	for my $pid (grep { /^\d+$/ } readdir $d)
	{
		open my $fh, '<', "/proc/$pid/stat" or next;
		my $s = <$fh> // '';
		my ($rest) = $s =~ /\)\s+(.*)$/s or next;
		push @kids, $pid if (split /\s+/, $rest)[1] == $ppid;
	}
	return @kids;
}

sub cmdline
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/cmdline" or return '';
	local $/;
	my $c = <$fh> // '';
	$c =~ s/\0+/ /g;
	return $c;
}

# Reap children that exited (services are reaped by supervise()).
sub reap_aux
{
	for my $pid (keys %procs)
	{
		next if $procs{$pid} =~ /^service/;
		if (waitpid($pid, WNOHANG) == $pid)
		{
			my $kind = delete $procs{$pid};
			event(sprintf('%s (pid %d) exited with status %d', $kind, $pid, $? >> 8))
			  if $kind =~ /^switchover/;
		}
	}
}

sub stop_pid
{
	my ($pid, $sig, $grace, $group) = @_;
	return unless $pid;
	my $target = $group ? -$pid : $pid;
	kill 'CONT', $target;
	kill $sig, $target;
	my $deadline = mono() + $grace;
	while (mono() < $deadline)
	{
		last if waitpid($pid, WNOHANG) == $pid || !alive($pid);
		usleep(50_000);
	}
	if (alive($pid))
	{
		kill 'KILL', $target;
		waitpid($pid, 0);
	}
	else { waitpid($pid, WNOHANG); }
	delete $procs{$pid};
}

sub free_port
{
	my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1, ReuseAddr => 1)
	  or die "no free port: $!";
	my $p = $s->sockport;
	close $s;
	return $p;
}

sub write_file
{
	my ($path, $text, $append) = @_;
	open my $fh, $append ? '>>' : '>', $path or die "$path: $!";
	print $fh $text;
	close $fh;
}

# ------------------------------------------------------------ iptables
sub ipt { return system('iptables', '-w', @_) == 0; }

sub ipt_setup
{
	ipt_teardown();
	ipt('-N', $CHAIN) or die "chaos: iptables -N $CHAIN failed (apt-get install iptables)\n";
	ipt('-I', 'OUTPUT', '-j', $CHAIN) or die "chaos: iptables -I OUTPUT failed\n";
}

sub ipt_teardown
{
	system("iptables -w -D OUTPUT -j $CHAIN 2>/dev/null") while system("iptables -w -C OUTPUT -j $CHAIN 2>/dev/null") == 0;
	system("iptables -w -F $CHAIN 2>/dev/null; iptables -w -X $CHAIN 2>/dev/null");
}

# ------------------------------------------------------------ etcd
sub etcd_cmd
{
	my ($m, $all) = @_;
	my $listen = join ',', map { "http://127.0.0.$_:$m->{client}" } 1 .. 4;
	return ('setpriv', '--pdeathsig', 'KILL', '--', 'etcd', "--name=$m->{name}",
		"--data-dir=$m->{data}", "--listen-client-urls=$listen",
		"--advertise-client-urls=http://127.0.0.1:$m->{client}",
		"--listen-peer-urls=http://127.0.0.1:$m->{peer}",
		"--initial-advertise-peer-urls=http://127.0.0.1:$m->{peer}",
		"--initial-cluster=$all", '--initial-cluster-state=new',
		"--initial-cluster-token=chaos-$$-$R->{seed}", '--heartbeat-interval=50',
		'--election-timeout=500', '--logger=zap', '--log-outputs=stderr',
		'--snapshot-count=10000');
}

sub etcd_start
{
	my ($i) = @_;
	my $m = $R->{etcd}[$i];
	return if $m->{pid};
	$m->{pid} = spawn(cmd => [ etcd_cmd($m, $R->{etcd_cluster}) ], log => "$R->{dir}/etcd$i.log",
		kind => "etcd$i");
}

sub etcd_healthy
{
	my ($i) = @_;
	my $r = $http->get("http://127.0.0.1:$R->{etcd}[$i]{client}/health");
	return $r->{success} && $r->{content} =~ /"health":\s*"true"/;
}

sub etcd_kill
{
	my ($i) = @_;
	my $m = $R->{etcd}[$i];
	return unless $m->{pid};
	stop_pid($m->{pid}, 'KILL', 5);
	$m->{pid} = undef;
}

sub etcd_call
{
	my ($path, $body) = @_;
	for my $m (@{ $R->{etcd} })
	{
		next unless $m->{pid};
		my $r = $http->post("http://127.0.0.1:$m->{client}/v3/$path",
			{ content => encode_json($body), headers => { 'Content-Type' => 'application/json' } });
		next unless $r->{success};
		my $j = eval { decode_json($r->{content}) } or next;
		return $j;
	}
	return undef;
}

# $serializable: any live member's local copy (no quorum needed, may be stale)
sub etcd_get
{
	my ($suffix, $serializable) = @_;
	my $j = etcd_call('kv/range', { key => encode_base64("/service/chaos/$suffix", ''),
			($serializable ? (serializable => JSON::PP::true) : ()) }) or return undef;
	my $kv = ($j->{kvs} // [])->[0] or return '';
	return decode_base64($kv->{value} // '');
}

sub etcd_endpoints
{
	my ($addr) = @_;
	return join ',', map { "http://$addr:$_->{client}" } @{ $R->{etcd} };
}

# ------------------------------------------------------------ postgres
my $TEMPLATE;

sub psql
{
	my ($n, $sql) = @_;
	my $out = `timeout 5 psql -X -A -t -q -F '|' -h '$R->{sock}' -p $n->{port} -U postgres -d postgres -c "$sql" 2>/dev/null`;
	return $? == 0 ? $out : undef;
}

# initdb once per invocation; every run copies this cleanly stopped cluster.
sub make_template
{
	my $t = "$WORK/template";
	my $log = "$WORK/template.log";
	mkdir "$WORK/tsock";
	chown $PG_UID, $PG_GID, $WORK, "$WORK/tsock";
	run_cmd($log, as_pg('initdb', '-D', $t, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8',
			'--locale=C', '--no-sync')) == 0 or die "chaos: initdb failed, see $log\n";
	my $port = free_port();
	run_cmd($log, as_pg('pg_ctl', '-D', $t, '-w', '-l', "$WORK/template.pg.log", '-o',
			"-p $port -k $WORK/tsock -c listen_addresses=''", 'start')) == 0
	  or die "chaos: template start failed\n";
	my $sql = 'CREATE TABLE chaos_w (id bigint PRIMARY KEY, client int, node text, tli int, '
	  . 'at timestamptz DEFAULT now()); '
	  . 'CREATE TABLE chaos_bench (id bigserial PRIMARY KEY, v float8, at timestamptz DEFAULT now());';
	my $rc = run_cmd($log, 'psql', '-X', '-q', '-h', "$WORK/tsock", '-p', $port, '-U', 'postgres',
		'-d', 'postgres', '-c', $sql);
	run_cmd($log, 'psql', '-X', '-q', '-h', "$WORK/tsock", '-p', $port, '-U', 'postgres',
		'-d', 'postgres', '-c', 'CREATE EXTENSION IF NOT EXISTS pg_ha');
	run_cmd($log, as_pg('pg_ctl', '-D', $t, '-w', '-m', 'fast', 'stop'));
	die "chaos: creating the tables failed, see $log\n" unless $rc == 0;
	write_file("$t/postgresql.conf", <<"EOF", 1);
# chaos suite
shared_preload_libraries = 'pg_ha'
pg_ha.namespace = '/service'
pg_ha.cluster = 'chaos'
pg_ha.ttl = $TTL
pg_ha.metrics_listen = ''
wal_log_hints = on
wal_keep_size = '1GB'
wal_retrieve_retry_interval = '500ms'
restart_after_crash = on
shared_buffers = '32MB'
log_line_prefix = '%m [%p] %b '
EOF
	copy("$opt{build}/fsync_shim.so", "$WORK/fsync_shim.so") or die "copy shim: $!";
	chmod 0755, "$WORK/fsync_shim.so";
	$TEMPLATE = $t;
}

sub node_conf
{
	my ($n, $primary_port) = @_;
	my $endpoints = etcd_endpoints($n->{etcd_addr});
	my $conf = <<"EOF";
port = $n->{port}
listen_addresses = '127.0.0.1'
unix_socket_directories = '$R->{sock}'
pg_ha.node_name = '$n->{name}'
pg_ha.connect_address = '127.0.0.1:$n->{port}'
pg_ha.api_listen = '127.0.0.1:$n->{api}'
pg_ha.etcd_endpoints = '$endpoints'
EOF
	(my $mode = $MODE_CONF{ $R->{mode} }) =~ s/%A/$R->{dir}\/api_auth/g;
	$conf .= $mode;
	$conf .= "primary_conninfo = 'host=127.0.0.1 port=$primary_port user=postgres application_name=$n->{name}'\n"
	  if $primary_port;
	return $conf;
}

# The service manager: pg_ha@.service's ExecStartPre and ExecStart.
sub start_service
{
	my ($n) = @_;
	$n->{held} = 0;    # enabled: restarted when it exits
	kill_orphans($n, 0);
	my $dd = $n->{data};
	$n->{svc} = spawn(
		cmd => [ as_pg('/bin/sh', '-c',
				"pg_hactl rejoin --if-needed --pgdata '$dd' && exec postgres -D '$dd'") ],
		log    => "$R->{dir}/$n->{name}.log",
		kind   => "service $n->{name}",
		setsid => 1,
		env    => { LD_PRELOAD => "$WORK/fsync_shim.so", HOME => $R->{dir},
			PGHA_CHAOS_FSYNC_DELAY_FILE => "$R->{dir}/fsync_delay.$n->{name}" });
	$n->{starts}++;
	$n->{started_at} = mono();
	event("service $n->{name} started (pid $n->{svc})") if $R->{faulting};
}

# Processes of a killed postmaster (snapshot taken before the kill): systemd
# waits for the unit's cgroup to empty before the restart; after $grace
# seconds we SIGKILL what is left (start time checked: PIDs get reused).
sub kill_orphans
{
	my ($n, $grace) = @_;
	my $o = $n->{orphans} // {};
	my @left = grep { (starttime($_) // -1) eq $o->{$_} && alive($_) } keys %$o;
	return 1 unless @left;
	return 0 if mono() < ($n->{exited_at} // 0) + $grace;
	kill 'CONT', @left;
	kill 'KILL', @left;
	$n->{orphans} = {};
	return 1;
}

sub supervise
{
	for my $n (@{ $R->{nodes} })
	{
		if ($n->{svc})
		{
			if (waitpid($n->{svc}, WNOHANG) == $n->{svc})
			{
				my $st = $?;
				delete $procs{ $n->{svc} };
				event(sprintf('service %s (pid %d) exited: %s', $n->{name}, $n->{svc},
						($st & 127) ? 'signal ' . ($st & 127) : 'status ' . ($st >> 8)));
				$n->{svc}       = undef;
				$n->{exited_at} = mono();
				my $at = mono() + 2;    # RestartSec=2
				$at = $n->{hold_until} if ($n->{hold_until} // 0) > $at;
				$n->{next_start} = $at;
			}
			next;
		}
		next if $n->{held} || mono() < ($n->{next_start} // 0);
		next unless kill_orphans($n, 10);
		start_service($n);
	}
}

sub running { my ($n) = @_; return $n->{svc} && alive($n->{svc}) ? 1 : 0; }

sub tick
{
	my ($secs) = @_;
	my $end = mono() + ($secs // 0.1);
	while (1)
	{
		die "interrupted\n" if $interrupted;
		supervise();
		reap_aux();
		last if mono() >= $end;
		usleep(50_000);
	}
}

sub wait_until
{
	my ($timeout, $cond) = @_;
	my $end = mono() + $timeout;
	while (mono() < $end)
	{
		my $v = eval { $cond->() };
		die "interrupted\n" if $interrupted;
		return $v if $v;
		tick(0.2);
	}
	return undef;
}

sub node_by_name { my ($name) = @_; return (grep { $_->{name} eq $name } @{ $R->{nodes} })[0]; }

# The current primary: the leader key's holder, else the last one known.
sub current_primary
{
	my $l = etcd_get('leader', 1);
	my $n = defined $l && $l ne '' ? node_by_name($l) : undef;
	$R->{last_primary} = $n if $n;
	return $R->{last_primary};
}

sub pick_replica
{
	my ($f, $primary) = @_;
	my @others = grep { $_ != $primary } @{ $R->{nodes} };
	return $others[ int($f->{pick} * @others) ];
}

# ------------------------------------------------------------ workload
sub start_workload
{
	my $s = $R->{sock};
	my @n = @{ $R->{nodes} };
	my $multi = "host=$s,$s,$s port=" . join(',', map { $_->{port} } @n)
	  . " user=postgres dbname=postgres target_session_attrs=read-write";
	for my $i (1 .. 3)
	{
		push @{ $R->{clients} },
		  spawn(cmd => [ 'nice', '-n', '10', "$opt{build}/chaos_client", $i,
				"host=$s port=$n[$i-1]{port} user=postgres dbname=postgres", "$R->{dir}/client$i.log" ],
			log => "$R->{dir}/clients.err", kind => "client$i");
	}
	push @{ $R->{clients} },
	  spawn(cmd => [ 'nice', '-n', '10', "$opt{build}/chaos_client", 4, $multi, "$R->{dir}/client4.log" ],
		log => "$R->{dir}/clients.err", kind => 'client4');
	write_file("$R->{dir}/bench.sql", "INSERT INTO chaos_bench (v) VALUES (random());\n");
	$R->{pgbench} = spawn(
		cmd => [ '/bin/sh', '-c', "while :; do nice -n 10 pgbench -n -c 4 -j 2 -T 5 "
			  . "-f '$R->{dir}/bench.sql' '$multi connect_timeout=2'; sleep 0.2; done" ],
		log => "$R->{dir}/pgbench.log", kind => 'pgbench', setsid => 1);
}

sub stop_workload
{
	stop_pid($_, 'TERM', 3) for @{ $R->{clients} // [] };
	$R->{clients} = [];
	stop_pid($R->{pgbench}, 'TERM', 2, 1) if $R->{pgbench};
	$R->{pgbench} = undef;
}

# ------------------------------------------------------------ faults
# kind => [weight, planned]: planned faults must never lose an acknowledged
# write (no unplanned failover can follow from them alone).
my %FAULTS = (
	kill9_primary    => [ 3, 0 ],
	kill9_replica    => [ 1, 1 ],
	stop_primary     => [ 2, 1 ],
	sigstop_worker   => [ 2, 0 ],
	sigstop_primary  => [ 2, 0 ],
	cut_primary_etcd => [ 2, 0 ],
	cut_replica_etcd => [ 1, 1 ],
	cut_replication  => [ 2, 0 ],
	etcd_kill1       => [ 1, 1 ],
	etcd_kill2       => [ 1, 0 ],
	switchover       => [ 2, 1 ],
	slow_disk        => [ 2, 0 ],
);

sub make_fault
{
	my @kinds = sort keys %FAULTS;
	@kinds = split /,/, $opt{only} if $opt{only};
	my $total = 0;
	$total += $FAULTS{$_}[0] for @kinds;
	my $x = rand($total);
	my $kind = $kinds[-1];
	for (@kinds) { if (($x -= $FAULTS{$_}[0]) < 0) { $kind = $_; last; } }
	my %f = (kind => $kind, pick => rand(), dur => 3 + rand(9), ms => 200 + int(rand(1800)),
		down => (rand() < 0.4 ? 0 : rand(10)), etcd => [ _shuffle3() ]);
	$f{dur} = $TTL + 1 + rand(5) if $kind =~ /^sigstop/;
	$f{dur} = 0 if $kind eq 'switchover';
	return \%f;
}

sub _shuffle3
{
	my @i = (0, 1, 2);
	for my $k (reverse 1 .. 2) { my $j = int(rand($k + 1)); @i[ $k, $j ] = @i[ $j, $k ]; }
	return @i;
}

sub make_plan
{
	my @f = (make_fault());
	$f[0]{at} = 0;
	if (rand() < 0.3)
	{
		push @f, make_fault();
		$f[1]{at} = rand($f[0]{dur} || 3);
	}
	$_->{at} = sprintf('%.1f', $_->{at}) + 0, $_->{dur} = sprintf('%.1f', $_->{dur}) + 0 for @f;
	return \@f;
}

sub describe
{
	my ($f) = @_;
	my $d = $f->{kind};
	$d .= "\@$f->{at}s" if $f->{at};
	$d .= "/$f->{dur}s" if $f->{dur} && $f->{kind} !~ /^kill9/;
	$d .= "/down$f->{dur_down}s" if defined $f->{dur_down};
	$d .= "/$f->{ms}ms" if $f->{kind} eq 'slow_disk';
	$d .= "($f->{target})" if $f->{target};
	return $d;
}

sub etcd_ports { return join ',', map { $_->{client} } @{ $R->{etcd} }; }

sub inject
{
	my ($f) = @_;
	my $p = current_primary();
	my $k = $f->{kind};
	my $t;
	if ($k eq 'kill9_primary' || $k eq 'kill9_replica')
	{
		$t = $k eq 'kill9_primary' ? $p : pick_replica($f, $p);
		$f->{dur_down} = sprintf('%.1f', $f->{down}) + 0;
		if ($t->{svc})
		{
			$t->{orphans} = { map { $_ => starttime($_) } children_of($t->{svc}) };
			kill 'KILL', $t->{svc};
		}
		$t->{hold_until} = mono() + $f->{down};
	}
	elsif ($k eq 'stop_primary')
	{
		$t = $p;
		$t->{held} = 1;    # systemctl stop: down until the heal
		# the unit's ExecStop (then KillSignal=SIGINT, which pg_hactl sent already)
		spawn(cmd => [ as_pg('pg_hactl', 'stop', '--pgdata', $t->{data}) ],
			log => "$R->{dir}/$t->{name}.log", kind => "stop $t->{name}") if $t->{svc};
	}
	elsif ($k eq 'sigstop_worker')
	{
		$t = $p;
		my ($w) = grep { cmdline($_) =~ /pg_ha worker/ } children_of($t->{svc} // 0);
		if ($w) { kill 'STOP', $w; $stopped{$w} = 1; $f->{pids} = [$w]; }
		else { event("no pg_ha worker found on $t->{name}"); }
	}
	elsif ($k eq 'sigstop_primary')
	{
		$t = $p;
		if ($t->{svc})
		{
			my @pids = ($t->{svc});
			kill 'STOP', $t->{svc};
			push @pids, children_of($t->{svc});
			kill 'STOP', @pids;
			$stopped{$_} = 1 for @pids;
			$f->{pids} = \@pids;
		}
	}
	elsif ($k eq 'cut_primary_etcd' || $k eq 'cut_replica_etcd')
	{
		$t = $k eq 'cut_primary_etcd' ? $p : pick_replica($f, $p);
		$f->{rule} = [ '-o', 'lo', '-d', "$t->{etcd_addr}/32", '-p', 'tcp', '-m', 'multiport',
			'--dports', etcd_ports(), '-j', 'DROP' ];
		ipt('-A', $CHAIN, @{ $f->{rule} });
	}
	elsif ($k eq 'cut_replication')
	{
		$t = $p;
		$f->{rule} = [ '-o', 'lo', '-d', '127.0.0.1/32', '-p', 'tcp', '--dport', $t->{port}, '-j', 'DROP' ];
		ipt('-A', $CHAIN, @{ $f->{rule} });
	}
	elsif ($k eq 'etcd_kill1' || $k eq 'etcd_kill2')
	{
		my @m = @{ $f->{etcd} }[ 0 .. ($k eq 'etcd_kill1' ? 0 : 1) ];
		etcd_kill($_) for @m;
		$f->{members} = \@m;
		$f->{target} = join '+', map { "etcd$_" } @m;
	}
	elsif ($k eq 'switchover')
	{
		$t = pick_replica($f, $p);
		spawn(cmd => [ 'pg_hactl', '--etcd', etcd_endpoints('127.0.0.1'), '--namespace', '/service',
				'--cluster', 'chaos', 'switchover', '--candidate', $t->{name}, '--timeout', '30' ],
			log => "$R->{dir}/switchover.log", kind => "switchover to $t->{name}");
	}
	elsif ($k eq 'slow_disk')
	{
		$t = $f->{pick} < 0.75 ? $p : pick_replica($f, $p);
		write_file("$R->{dir}/fsync_delay.$t->{name}", "$f->{ms}\n");
	}
	$f->{target} //= $t->{name} if $t;
	$f->{node} = $t;
	event('inject ' . describe($f));
}

sub heal
{
	my ($f) = @_;
	return if $f->{healed}++;
	my $k = $f->{kind};
	if ($f->{pids})
	{
		# the postmaster last: its children must not see it run before them
		my @p = reverse @{ $f->{pids} };
		kill 'CONT', @p;
		delete $stopped{$_} for @p;
	}
	ipt('-D', $CHAIN, @{ $f->{rule} }) if $f->{rule};
	$f->{node}{held} = 0, $f->{node}{next_start} = mono() if $k eq 'stop_primary';
	etcd_start($_) for @{ $f->{members} // [] };
	unlink "$R->{dir}/fsync_delay.$f->{target}" if $k eq 'slow_disk';
	event('heal ' . describe($f));
}

sub heal_all
{
	heal($_) for @{ $R->{plan} };
	kill 'CONT', keys %stopped;
	%stopped = ();
	system("iptables -w -F $CHAIN");
	unlink glob("$R->{dir}/fsync_delay.*");
	etcd_start($_) for 0 .. 2;
	for my $n (@{ $R->{nodes} })
	{
		$n->{held} = 0;
		$n->{hold_until} = 0;
	}
}

# ------------------------------------------------------------ observation
sub observe
{
	my %nodes;
	for my $n (@{ $R->{nodes} })
	{
		my %o = (running => running($n), port => $n->{port},
			restarts => ($n->{starts} - ($R->{starts_at_heal}{ $n->{name} } // $n->{starts})),
			diverged => -e "$n->{data}/pg_ha.rejoin" ? 1 : 0);
		my $r = $http->get("http://127.0.0.1:$n->{api}/primary");
		$o{primary_http} = $r->{status} == 599 ? undef : $r->{status};
		my $out = $o{running} ? psql($n,
			"SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN 0 ELSE "
			  . "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END, "
			  . "coalesce((SELECT status || ',' || coalesce(sender_port, 0) || ',' || received_tli "
			  . "FROM pg_stat_wal_receiver), '')") : undef;
		if (defined $out && $out =~ /^([tf])\|(\d+)\|(.*)$/m)
		{
			$o{in_recovery} = $1 eq 't' ? 1 : 0;
			$o{timeline} = $2;
			my ($st, $port, $tli) = split /,/, $3;
			$o{receiver} = { status => $st, sender_port => $port, received_tli => $tli } if $st;
		}
		$nodes{ $n->{name} } = \%o;
	}
	my $l = etcd_get('leader');
	return (leader => (defined $l && $l ne '' ? $l : undef), nodes => \%nodes);
}

# ------------------------------------------------------------ one run
sub setup_run
{
	my ($seed) = @_;
	my $dir = "$WORK/r$seed";
	remove_tree($dir);
	make_path("$dir/sock");
	chown $PG_UID, $PG_GID, $dir, "$dir/sock";
	# failsafe mode: the same API credentials on every node, private to postgres
	write_file("$dir/api_auth", "chaos:chaos-$seed\n");
	chmod 0600, "$dir/api_auth";
	chown $PG_UID, $PG_GID, "$dir/api_auth";
	$R->{dir}  = $dir;
	$R->{sock} = "$dir/sock";
	my @used;
	my $port = sub { my $p; do { $p = free_port() } while grep { $_ == $p } @used; push @used, $p; $p };
	$R->{etcd} = [ map { { name => "e$_", client => $port->(), peer => $port->(), data => "$dir/etcd$_" } } 0 .. 2 ];
	$R->{etcd_cluster} = join ',', map { "$_->{name}=http://127.0.0.1:$_->{peer}" } @{ $R->{etcd} };
	etcd_start($_) for 0 .. 2;
	wait_until(30, sub { !grep { !etcd_healthy($_) } 0 .. 2 }) or die "etcd did not become healthy\n";

	for my $j (1 .. 3)
	{
		my $n = { name => "node$j", port => $port->(), api => $port->(), etcd_addr => '127.0.0.' . ($j + 1),
			data => "$dir/node$j", starts => 0, held => 1 };
		system('cp', '-a', $TEMPLATE, $n->{data}) == 0 or die "copy of the template failed\n";
		push @{ $R->{nodes} }, $n;
	}
	my $p1 = $R->{nodes}[0]{port};
	for my $n (@{ $R->{nodes} })
	{
		my $standby = $n->{name} ne 'node1';
		write_file("$n->{data}/postgresql.conf", node_conf($n, $standby ? $p1 : undef), 1);
		if ($standby)
		{
			write_file("$n->{data}/standby.signal", '');
			chown $PG_UID, $PG_GID, "$n->{data}/standby.signal";
		}
	}
	start_service($R->{nodes}[0]);
	wait_until(30, sub { (etcd_get('leader') // '') eq 'node1' && psql($R->{nodes}[0], 'SELECT 1') })
	  or die "node1 did not take the leader key\n";
	start_service($_) for @{ $R->{nodes} }[ 1, 2 ];
	for my $n (@{ $R->{nodes} }[ 1, 2 ])
	{
		wait_until(30, sub {
			my $m = eval { decode_json(etcd_get("members/$n->{name}") // '') } or return 0;
			return ($m->{state} // '') =~ /streaming/ || ($m->{replication_state} // '') =~ /streaming/;
		}) or die "$n->{name} did not stream\n";
	}
	$R->{last_primary} = $R->{nodes}[0];
}

sub teardown_run
{
	return unless $R;
	stop_workload();
	kill 'CONT', keys %stopped;
	%stopped = ();
	for my $pid (grep { $procs{$_} =~ /^switchover/ } keys %procs) { stop_pid($pid, 'TERM', 3); }
	for my $n (@{ $R->{nodes} // [] })
	{
		stop_pid($n->{svc}, 'INT', 15) if $n->{svc};
		$n->{svc} = undef;
		$n->{exited_at} = 0;
		kill_orphans($n, 0);
	}
	for my $m (@{ $R->{etcd} // [] }) { stop_pid($m->{pid}, 'TERM', 5) if $m->{pid}; $m->{pid} = undef; }
	system("iptables -w -F $CHAIN 2>/dev/null");
}

# Evidence for a run that did not converge: every node's processes, what
# each waits on (wchan) and its kernel stack, into processes.log (kept with
# the failed run's logs).
sub snapshot_processes
{
	my $out = '';
	for my $n (@{ $R->{nodes} })
	{
		my $pm = $n->{svc} or next;
		$out .= "== $n->{name} (service pid $pm)\n";
		for my $pid ($pm, children_of($pm), map { children_of($_) } children_of($pm))
		{
			$out .= `ps -o pid=,stat=,wchan:32=,args= -p $pid 2>/dev/null`;
			if (open my $fh, '<', "/proc/$pid/stack")
			{
				local $/;
				my $st = <$fh> // '';
				$out .= join('', map { "      $_\n" } split /\n/, $st);
			}
		}
	}
	write_file("$R->{dir}/processes.log", $out);
}

sub final_data
{
	my ($leader) = @_;
	my $out = psql($leader, 'SELECT id, node, tli FROM chaos_w') // die "reading the final data failed\n";
	my %final;
	for (split /\n/, $out)
	{
		my ($id, $node, $tli) = split /\|/;
		$final{$id} = { node => $node, tli => $tli } if defined $tli;
	}
	return \%final;
}

# Replicas caught up with the leader hold exactly its rows.
sub replicas_match
{
	my ($leader) = @_;
	my @bad;
	my $lsn = psql($leader, 'SELECT pg_current_wal_lsn()') // return ('leader does not answer');
	chomp $lsn;
	my $sig = psql($leader, 'SELECT count(*), coalesce(sum(id), 0) FROM chaos_w') // '';
	for my $n (grep { $_ != $leader } @{ $R->{nodes} })
	{
		my $ok = wait_until(30, sub {
			(psql($n, "SELECT pg_last_wal_replay_lsn() >= '$lsn'") // '') =~ /^t/; });
		if (!$ok) { push @bad, "$n->{name} did not replay up to $lsn"; next; }
		my $s = psql($n, 'SELECT count(*), coalesce(sum(id), 0) FROM chaos_w') // '';
		push @bad, "$n->{name} rows differ from the leader's: $s vs $sig" if $s ne $sig;
	}
	return @bad;
}

sub run_one
{
	my ($seed, $k) = @_;
	srand($seed);
	$R = { seed => $seed, t0 => mono(), events => [], nodes => [], clients => [], mode => mode_of_seed($seed) };
	$R->{plan} = make_plan();
	my %res = (seed => $seed, mode => $R->{mode}, problems => []);
	eval {
		setup_run($seed);
		$R->{faulting} = 1;
		start_workload();
		tick(3);    # many backends mid-commit before the first fault
		my $t0 = mono();
		$res{t_fault} = $t0;
		my @todo = map { ([ $_->{at}, 'inject', $_ ], [ $_->{at} + $_->{dur}, 'heal', $_ ]) } @{ $R->{plan} };
		@todo = sort { $a->[0] <=> $b->[0] || ($a->[1] eq 'heal' ? -1 : 1) } @todo;
		for my $step (@todo)
		{
			tick(0.1) while mono() < $t0 + $step->[0];
			$step->[1] eq 'inject' ? inject($step->[2]) : heal($step->[2]);
		}
		# a kill -9 lasts as long as the node stays down
		tick(0.1) while grep { ($_->{hold_until} // 0) > mono() } @{ $R->{nodes} };
		tick(1);
		heal_all();
		event('healed everything');
		$R->{starts_at_heal} = { map { $_->{name} => $_->{starts} } @{ $R->{nodes} } };
		my $t_heal = mono();
		my %obs;
		my @bad = ('not observed');
		my $converged = wait_until(120, sub {
			%obs = observe();
			@bad = ChaosCheck::check_convergence(%obs);
			return !@bad;
		});
		$res{converge_s} = mono() - $t_heal;
		if ($converged)
		{
			tick(2);    # the clients write to the converged cluster
			%obs = observe();
			@bad = ChaosCheck::check_convergence(%obs);
		}
		event('convergence: ' . (@bad ? join('; ', @bad) : sprintf('converged in %.1fs', $res{converge_s})));
		snapshot_processes() if @bad;
		stop_workload();
		$res{t_end} = mono();
		if (@bad)
		{
			$res{nonconverged} = 1;
			push @{ $res{problems} }, map { "not converged: $_" } @bad;
		}
		my $leader = defined $obs{leader} ? node_by_name($obs{leader}) : current_primary();
		my $final = final_data($leader);
		unless (@bad)
		{
			my @m = replicas_match($leader);
			$res{diverged} = 1 if @m;
			push @{ $res{problems} }, @m;
		}
		my $hist = eval { decode_json(etcd_get('history') // '[]') } // [];
		my $planned = !grep { !$FAULTS{ $_->{kind} }[1] } @{ $R->{plan} };
		my $writes = ChaosCheck::read_history(map { "$R->{dir}/client$_.log" } 1 .. 4);
		my $c = ChaosCheck::check_history(writes => $writes, final => $final,
			mode => $LOSSLESS{ $R->{mode} } ? 'sync' : 'async',
			planned => $planned, history => $hist);
		$res{check} = $c;
		$res{stats} = ChaosCheck::run_stats(writes => $writes, t_fault => $res{t_fault}, t_end => $res{t_end});
		push @{ $res{problems} }, @{ $c->{evidence} } if @{ $c->{fail} };
		push @{ $res{info} }, @{ $c->{evidence} } unless @{ $c->{fail} };
		$res{restarts} = join ',', map { $_->{starts} - 1 } @{ $R->{nodes} };
		1;
	} or do {
		my $e = $@;
		die $e if $interrupted;
		chomp $e;
		$res{error} = $e;
		push @{ $res{problems} }, "harness: $e";
		event("harness error: $e");
		for my $n (@{ $R->{nodes} })
		{
			my @tail = `tail -n 4 '$R->{dir}/$n->{name}.log' 2>/dev/null`;
			push @{ $res{problems} }, map { "$n->{name}.log: $_" } @tail;
		}
	};
	teardown_run();
	$res{secs} = mono() - $R->{t0};
	$res{faults} = join '+', map { describe($_) } @{ $R->{plan} };
	return \%res;
}

sub verdict_line
{
	my ($res, $k) = @_;
	my $c = $res->{check} // {};
	my $pass = !@{ $res->{problems} };
	my $st = $res->{stats} // {};
	my $s1 = sub { defined $_[0] ? sprintf('%.1fs', $_[0]) : '-' };
	return sprintf('run %d/%d seed=%d %s mode=%s %s acked=%d refused=%d unknown=%d lost_on_failover=%d late_acks=%d '
		  . 'outage=%s gap=%s/%s converged=%s restarts=%s time=%.1fs%s',
		$k, $opt{runs}, $res->{seed}, $pass ? 'PASS' : 'FAIL', $res->{mode}, $res->{faults}, $c->{acked} // 0,
		$c->{refused} // 0, $c->{unknown} // 0, $c->{lost_on_failover} // 0, $c->{late_acks} // 0,
		$s1->($st->{outage_s}), $s1->($st->{pinned_gap_s}), $s1->($st->{multi_gap_s}),
		$res->{nonconverged} || !defined $res->{converge_s} ? 'no' : sprintf('%.1fs', $res->{converge_s}),
		$res->{restarts} // '-', $res->{secs},
		$pass ? '' : "\n    " . join("\n    ", @{ $res->{problems} }[ 0 .. ($#{ $res->{problems} } < 9 ? $#{ $res->{problems} } : 9) ]));
}

# Logs of a failed run go to --out/seed-N (data directories are dropped).
sub keep_logs
{
	my ($res, $line) = @_;
	my $dst = "$opt{out}/seed-$res->{seed}";
	remove_tree($dst);
	make_path($dst);
	for my $f (glob("$R->{dir}/*.log"), glob("$R->{dir}/*.err"))
	{
		copy($f, $dst);
	}
	write_file("$dst/verdict.txt", "$line\n\n" . join("\n", @{ $res->{problems} }, @{ $res->{info} // [] }) . "\n");
	return $dst;
}

# ------------------------------------------------------------ cleanup
sub cleanup_all
{
	return if $cleaning++;
	local $@;
	eval { teardown_run(); };
	for my $pid (keys %procs) { eval { stop_pid($pid, 'KILL', 2, $procs{$pid} eq 'pgbench'); }; }
	ipt_teardown();
	remove_tree($WORK) if -d $WORK && !$opt{keep};
}

$SIG{$_} = sub { $interrupted = 1; die "interrupted\n" unless $cleaning; } for qw(INT TERM HUP);
END { cleanup_all() if $$ == ($main::PARENT // 0); }
$main::PARENT = $$;

# ------------------------------------------------------------ main
$| = 1;
make_path($WORK, $opt{out});
chmod 0755, $WORK;
print "chaos: $opt{runs} runs from seed $opt{seed}, mode $opt{mode}, ttl ${TTL}s, work $WORK, logs of failures in $opt{out}\n";
my %sum = (runs => 0, split_brain => 0, lost_on_switchover => 0, lost_on_failover => 0, nonconverged => 0);
my (@failed, %mix, @rows);
eval {
	ipt_setup();
	make_template();
	for my $k (1 .. $opt{runs})
	{
		my $seed = $opt{seed} + $k - 1;
		my $res = run_one($seed, $k);
		my $line = verdict_line($res, $k);
		print "$line\n";
		$sum{runs}++;
		my $c = $res->{check} // {};
		$sum{split_brain} += $c->{split_brain} // 0;
		$sum{lost_on_switchover} += $c->{lost_on_switchover} // 0;
		$sum{lost_on_failover} += $c->{lost_on_failover} // 0;
		$sum{nonconverged}++ if $res->{nonconverged};
		$mix{ $_->{kind} }++ for @{ $R->{plan} };
		push @rows, result_row($res);
		if (@{ $res->{problems} })
		{
			push @failed, $seed;
			print "    logs: " . keep_logs($res, $line) . "\n";
		}
		remove_tree($R->{dir}) unless $opt{keep};
		$R = undef;
	}
	1;
} or do {
	my $e = $@;
	print STDERR "chaos: $e";
	cleanup_all();
	summary();
	exit($e =~ /^interrupted/ ? 130 : 2);
};
cleanup_all();
summary();
exit(@failed ? 1 : 0);

# One row of the results table (ChaosCheck::results_table) per run, also
# appended to --out/runs.tsv, so that the runs of several invocations can be
# tabulated together (test/chaos/README.md).
sub result_row
{
	my ($res) = @_;
	my @kinds = map { $_->{kind} } @{ $R->{plan} };
	my $row = { seed => $res->{seed}, mode => $res->{mode}, faults => $res->{faults},
		group => (@kinds > 1 ? 'two overlapping' : $kinds[0]), pass => !@{ $res->{problems} } ? 1 : 0,
		async => $LOSSLESS{ $res->{mode} } ? 0 : 1, lost_on_failover => ($res->{check} // {})->{lost_on_failover} // 0,
		converge_s => $res->{nonconverged} ? undef : $res->{converge_s}, %{ $res->{stats} // {} } };
	my @cols = qw(seed mode group faults pass async lost_on_failover outage_s pinned_gap_s multi_gap_s converge_s);
	my $tsv = "$opt{out}/runs.tsv";
	my $new = !-e $tsv;
	open my $fh, '>>', $tsv or return $row;
	print $fh join("\t", @cols) . "\n" if $new;
	print $fh join("\t", map { my $v = $row->{$_}; !defined $v ? '' : /_s$/ ? sprintf('%.2f', $v) : $v } @cols) . "\n";
	close $fh;
	return $row;
}

sub summary
{
	printf "runs=%d split_brain=%d lost_on_switchover=%d lost_on_failover=%d nonconverged=%d\n",
	  @sum{qw(runs split_brain lost_on_switchover lost_on_failover nonconverged)};
	print 'fault mix: ' . join(' ', map { "$_=$mix{$_}" } sort keys %mix) . "\n";
	print 'failed seeds: ' . (@failed ? join(' ', @failed) : 'none') . "\n";
	return unless @rows;
	my $by_fault = ChaosCheck::results_table(@rows);
	my $by_mode = ChaosCheck::results_table(map { { %$_, group => "mode $_->{mode}" } } @rows);
	print "\n$by_fault\n$by_mode";
	write_file("$opt{out}/results.md", "Seeds $opt{seed}.." . ($opt{seed} + $sum{runs} - 1)
		  . ", mode $opt{mode}\n\n$by_fault\n$by_mode");
}
