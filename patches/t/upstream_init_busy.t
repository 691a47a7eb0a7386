#!/usr/bin/perl

# (C) ngx_supervisord authors

# Tests for "no live upstreams" with the init_busy patch: once the last live
# peer was tried, the request must be answered as stock nginx answers it, and
# must never be started over (an earlier version of the patch called peer.init
# again there, and retried the same peers forever).

###############################################################################

use warnings;
use strict;

use Test::More;

use IO::Socket::INET;
use Socket qw/ CRLF /;

BEGIN { use FindBin; chdir($FindBin::Bin); }

use lib 'lib';
use Test::Nginx;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http proxy/)->plan(18);

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    # a backend which only says 404, and a port nobody listens on

    upstream backend {
        server 127.0.0.1:8081;
        server 127.0.0.1:8082;
    }

    # two closed ports, the first one is never considered failed

    upstream dead {
        server 127.0.0.1:8082 max_fails=0;
        server 127.0.0.1:8083;
    }

    upstream alldown {
        server 127.0.0.1:8081 down;
        server 127.0.0.1:8082 down;
    }

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        add_header X-Addr $upstream_addr always;
        add_header X-Status $upstream_status always;

        location /404 {
            proxy_pass http://backend;
            proxy_next_upstream error timeout http_404;
        }

        location /dead {
            proxy_pass http://dead;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 2;
            proxy_next_upstream_timeout 1s;
        }

        location /down {
            proxy_pass http://alldown;
        }
    }
}

EOF

$t->run_daemon(\&not_found_daemon, port(8081));
$t->run()->waitforsocket('127.0.0.1:' . port(8081));

###############################################################################

my ($p1, $p2, $p3) = (port(8081), port(8082), port(8083));
my ($r, $n);

# (a) next upstream on http_404: the first request tries both servers, and
# the closed port is failed then; the next one asks the 404 backend once,
# finds no live upstreams, and is answered 502

$n = seen();

$r = http_get('/404');
like($r, qr/^HTTP\/1.1 502 /, '404 and error - 502');
like($r, qr/^X-Addr: 127.0.0.1:$p1, 127.0.0.1:$p2\x0d?$/m,
	'404 and error - both tried');
is(seen() - $n, 1, '404 and error - 404 backend asked once');

$n = seen();

$r = http_get('/404');
like($r, qr/^HTTP\/1.1 502 /, '404 and failed - 502');
like($r, qr/^X-Addr: 127.0.0.1:$p1, backend\x0d?$/m,
	'404 and failed - no live upstreams');
like($r, qr/^X-Status: 404, 502\x0d?$/m, '404 and failed - statuses');
is(seen() - $n, 1, '404 and failed - 404 backend asked once');

# (b) a server with max_fails=0 is never failed: once the other one is,
# no live upstreams follows the first try, well within tries and timeout

$r = http_get('/dead');
like($r, qr/^HTTP\/1.1 502 /, 'dead - 502');
like($r, qr/^X-Addr: 127.0.0.1:$p2, 127.0.0.1:$p3\x0d?$/m,
	'dead - both tried');

$r = http_get('/dead');
like($r, qr/^HTTP\/1.1 502 /, 'dead and failed - 502');
like($r, qr/^X-Addr: 127.0.0.1:$p2, dead\x0d?$/m,
	'dead and failed - no live upstreams');
like($r, qr/^X-Status: 502, 502\x0d?$/m, 'dead and failed - statuses');

# (c) all servers down: no live upstreams, once

$n = seen();

$r = http_get('/down');
like($r, qr/^HTTP\/1.1 502 /, 'all down - 502');
like($r, qr/^X-Addr: alldown\x0d?$/m, 'all down - upstream name once');
like($r, qr/^X-Status: 502\x0d?$/m, 'all down - status once');
is(seen() - $n, 0, 'all down - backend not asked');

# nothing is left running: the 404 backend got no more requests

$n = seen();
select undef, undef, undef, 0.3;
is(seen() - $n, 0, 'no requests left');

like(http_get('/down'), qr/^HTTP\/1.1 502 /, 'still answers');

###############################################################################

# the number of requests the 404 backend got, asked from it directly

sub seen {
	my $s = IO::Socket::INET->new('127.0.0.1:' . port(8081))
		or return -1;
	my $r = http_get('/count', socket => $s);
	return ($r && $r =~ /\x0d?\x0a\x0d?\x0a(\d+)$/) ? $1 : -1;
}

###############################################################################

sub not_found_daemon {
	my ($port) = @_;
	my $requests = 0;

	my $server = IO::Socket::INET->new(
		Proto => 'tcp',
		LocalHost => '127.0.0.1',
		LocalPort => $port,
		Listen => 128,
		Reuse => 1
	)
		or die "Can't create listening socket: $!\n";

	local $SIG{PIPE} = 'IGNORE';

	while (my $client = $server->accept()) {
		$client->autoflush(1);

		my $headers = '';

		while (<$client>) {
			$headers .= $_;
			last if (/^\x0d?\x0a?$/);
		}

		next if $headers eq '';

		my $uri = $headers =~ /^\S+\s+(\S+)\s+HTTP/i ? $1 : '';

		if ($uri eq '/count') {
			print $client 'HTTP/1.1 200 OK' . CRLF
				. 'Content-Length: ' . length($requests) . CRLF
				. 'Connection: close' . CRLF . CRLF
				. $requests;
			next;
		}

		$requests++;

		Test::Nginx::log_core('||', "$port: request $requests, 404");

		print $client 'HTTP/1.1 404 Not Found' . CRLF
			. 'Content-Length: 0' . CRLF
			. 'Connection: close' . CRLF . CRLF;
	}
}

###############################################################################
