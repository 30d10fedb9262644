#!/bin/sh
# Throw-away certificates for tests: a CA, and certificates it signs.
#   make-test-certs.sh DIR
# writes into DIR:
#   ca.pem ca.key                  the test CA
#   server.pem server.key          CN=localhost, SAN localhost, 127.0.0.1, ::1
#   gateway.pem gateway.key        CN=edge-gateway, SAN edge-gateway, 127.0.0.2 (a gateway's name)
#   wrongname.pem wrongname.key    CN/SAN not-this-host.example
#   expired.pem expired.key        for localhost, expired in 2020
#   client.pem client.key          a client certificate, CN=test-device
#   other-ca.pem                   a CA that signed none of these
# and forgeries of client.pem, each CN=test-device (tests of the attacker's path):
#   forged-self.pem .key           self-signed
#   forged-other-ca.pem .key       signed by other-ca
#   client-expired.pem .key        signed by the test CA, expired in 2020
#   client-server-only.pem .key    signed by the test CA for serverAuth only (wrong purpose)
set -eu
dir=${1:?usage: make-test-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
VERSION=3 # bump when the set of certificates changes: older folders are made anew
[ "$(cat .complete 2>/dev/null)" = "$VERSION" ] && exit 0

q() { "$@" >/dev/null 2>&1 || { echo "make-test-certs: failed: $*" >&2; exit 1; }; }

q openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 -subj "/CN=iotgw test CA"
q openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem -days 3650 -subj "/CN=unrelated CA"

sign() { # name cn san days [ca] [extra extension line]
    ca=${5:-ca}
    q openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2"
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\n%s\n' "$3" "${6:-}" > "$1.ext"
    q openssl x509 -req -in "$1.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial -out "$1.pem" -days "$4" \
        -extfile "$1.ext"
    rm -f "$1.csr" "$1.ext"
}
sign server localhost "DNS:localhost,IP:127.0.0.1,IP:::1" 3650
# a gateway's own name, as an SDK device's GatewayHostName names it (tests/interop)
sign gateway edge-gateway "DNS:edge-gateway,IP:127.0.0.2" 3650
sign wrongname not-this-host.example "DNS:not-this-host.example" 3650
sign client test-device "DNS:test-device" 3650
sign forged-other-ca test-device "DNS:test-device" 3650 other-ca
sign client-server-only test-device "DNS:test-device" 3650 ca "extendedKeyUsage=serverAuth"
q openssl req -x509 -newkey rsa:2048 -nodes -keyout forged-self.key -out forged-self.pem -days 3650 \
    -subj "/CN=test-device"

# An expired certificate needs explicit dates, which only 'openssl ca' can set here.
q openssl req -newkey rsa:2048 -nodes -keyout expired.key -out expired.csr -subj "/CN=localhost"
mkdir -p ca-db && : > ca-db/index.txt && echo 1000 > ca-db/serial
cat > ca-db/ca.cnf <<CNF
[ca]
default_ca = test
[test]
database = ca-db/index.txt
serial = ca-db/serial
new_certs_dir = ca-db
default_md = sha256
policy = any
copy_extensions = none
x509_extensions = ext
[any]
commonName = supplied
[ext]
subjectAltName = DNS:localhost,IP:127.0.0.1
CNF
q openssl ca -batch -config ca-db/ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr -out expired.pem \
    -startdate 20200101000000Z -enddate 20200201000000Z -notext
q openssl req -newkey rsa:2048 -nodes -keyout client-expired.key -out client-expired.csr -subj "/CN=test-device"
sed -i 's/^subjectAltName = .*/subjectAltName = DNS:test-device/' ca-db/ca.cnf
q openssl ca -batch -config ca-db/ca.cnf -cert ca.pem -keyfile ca.key -in client-expired.csr \
    -out client-expired.pem -startdate 20200101000000Z -enddate 20200201000000Z -notext
rm -rf ca-db expired.csr client-expired.csr
echo "$VERSION" > .complete
