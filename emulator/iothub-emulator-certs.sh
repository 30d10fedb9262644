#!/bin/sh
# Make a throw-away CA and a server certificate for iothub-emulator.
#   iothub-emulator-certs DIR [HOSTNAME]
# writes DIR/ca.pem (give it to clients as their trusted CA), DIR/ca.key, and
# DIR/server.pem + DIR/server.key (for --cert/--key), valid for localhost, 127.0.0.1,
# ::1 and HOSTNAME when given. Never use these outside development and tests.
set -eu
usage() { echo "usage: iothub-emulator-certs DIR [HOSTNAME]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || usage
case "$1" in
    -h|--help)
        cat <<'EOF'
usage: iothub-emulator-certs DIR [HOSTNAME]
Makes a throw-away CA and a server certificate for iothub-emulator: DIR/ca.pem (give it
to clients as their trusted CA), DIR/ca.key, and DIR/server.pem and DIR/server.key (for
the emulator's --cert and --key), valid for localhost, 127.0.0.1, ::1 and HOSTNAME when
given. Never use these outside development and tests. Needs the openssl command.
EOF
        exit 0;;
esac
dir=$1
host=${2:-}
command -v openssl >/dev/null 2>&1 || { echo "iothub-emulator-certs: the openssl command is needed (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
cd "$dir"
run() { "$@" >/dev/null 2>&1 || { echo "iothub-emulator-certs: failed: $*" >&2; exit 1; }; }
san="DNS:localhost,IP:127.0.0.1,IP:::1"
cn=localhost
if [ -n "$host" ] && [ "$host" != localhost ]; then
    san="DNS:$host,$san"
    cn=$host
fi
umask 077
run openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 825 -subj "/CN=iothub-emulator throw-away CA"
run openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=$cn"
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$san" > server.ext
run openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 825 -extfile server.ext
rm -f server.csr server.ext ca.srl
chmod 644 ca.pem server.pem
echo "iothub-emulator-certs: wrote $dir/ca.pem (trust this), $dir/server.pem and $dir/server.key (for $san)"
