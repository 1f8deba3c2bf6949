#!/usr/bin/perl
# Perl Mail::DKIM's ARC signer and verifier (libmail-dkim-perl), driven by the ARC interop
# tests (tests/interop/test_arc_interop.py). Key records come from a file of "NAME RECORD"
# lines (OpenDKIM's TestDNSData form), never from DNS: Mail::DKIM::DNS::query is replaced.
#
#   mail_dkim_arc.pl verify DNSFILE < message        prints "RESULT DETAIL"
#   mail_dkim_arc.pl seal DNSFILE KEYFILE DOMAIN SELECTOR SRVID TIMESTAMP < message
#                                                    prints the new ARC set, then the message
use strict;
use warnings;
use Mail::DKIM::ARC::Signer;
use Mail::DKIM::ARC::Verifier;
use Mail::DKIM::DNS;
use Net::DNS;

my ( $mode, $dnsfile, @rest ) = @ARGV;
my %records;
open( my $fh, '<', $dnsfile ) or die "cannot read $dnsfile: $!";
while ( my $line = <$fh> ) {
    next if $line =~ /^\s*(#|$)/;
    chomp $line;
    my ( $name, $text ) = split( /\s+/, $line, 2 );
    $name =~ s/\.$//;
    push @{ $records{ lc $name } }, $text;
}
close $fh;

{
    no warnings 'redefine';
    *Mail::DKIM::DNS::query = sub {
        my ( $domain, $type ) = @_;
        $domain =~ s/\.$//;
        my $texts = $records{ lc $domain };
        unless ($texts) { $@ = 'NXDOMAIN'; return; }
        return map { Net::DNS::RR->new( name => $domain, type => 'TXT', txtdata => $_ ) } @$texts;
    };
}

binmode STDIN;
binmode STDOUT;
my $message = do { local $/; <STDIN> };
$message =~ s/\r?\n/\r\n/g;

if ( $mode eq 'verify' ) {
    my $arc = Mail::DKIM::ARC::Verifier->new();
    $arc->PRINT($message);
    $arc->CLOSE;
    print $arc->result, ' ', ( $arc->result_detail // '' ), "\n";
}
elsif ( $mode eq 'seal' ) {
    my ( $keyfile, $domain, $selector, $srvid, $timestamp ) = @rest;
    my $arc = Mail::DKIM::ARC::Signer->new(
        Algorithm => 'rsa-sha256',
        Domain    => $domain,
        Selector  => $selector,
        SrvId     => $srvid,
        KeyFile   => $keyfile,
        Chain     => 'ar',
        Timestamp => $timestamp,
    );
    $arc->PRINT($message);
    $arc->CLOSE;
    print $arc->as_string, $message;
}
else {
    die "usage: $0 verify|seal DNSFILE ...\n";
}
