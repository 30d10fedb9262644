/* Why OpenSSL refused a peer's certificate, in words: see tls_reason.h. */
#include <stdio.h>
#include <openssl/x509_vfy.h>

#include "transport/tls_reason.h"

void tls_reason_describe(int err, int depth, int peer_is_server, const char *host, char *out, size_t size)
{
    const char *peer = peer_is_server ? "server" : "client";
    int of_chain = 0; /* about the chain as a whole, not the certificate at depth */
    char what[128];
    switch (err) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        of_chain = 1;
        snprintf(what, sizeof what, "is not signed by a trusted CA");
        break;
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        snprintf(what, sizeof what, "is self-signed and not trusted");
        break;
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        of_chain = 1;
        snprintf(what, sizeof what, "chain ends at a self-signed CA that is not trusted");
        break;
    case X509_V_ERR_CERT_HAS_EXPIRED: snprintf(what, sizeof what, "has expired"); break;
    case X509_V_ERR_CERT_NOT_YET_VALID: snprintf(what, sizeof what, "is not valid yet"); break;
    case X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD:
    case X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD:
        snprintf(what, sizeof what, "has an unreadable validity date");
        break;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        if (host) /* a name from our own configuration, bounded all the same */
            snprintf(what, sizeof what, "is not for %.80s", host);
        else
            snprintf(what, sizeof what, "is for another host");
        break;
    case X509_V_ERR_CERT_REVOKED: snprintf(what, sizeof what, "has been revoked"); break;
    case X509_V_ERR_INVALID_PURPOSE: snprintf(what, sizeof what, "is not meant for a TLS %s", peer); break;
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        snprintf(what, sizeof what, "has a signature that does not verify");
        break;
    case X509_V_ERR_INVALID_CA: snprintf(what, sizeof what, "signs others but is not a CA"); break;
    case X509_V_ERR_CERT_CHAIN_TOO_LONG:
    case X509_V_ERR_PATH_LENGTH_EXCEEDED:
        of_chain = 1;
        snprintf(what, sizeof what, "chain is too long");
        break;
    case X509_V_ERR_EE_KEY_TOO_SMALL:
    case X509_V_ERR_CA_KEY_TOO_SMALL:
    case X509_V_ERR_CA_MD_TOO_WEAK:
        snprintf(what, sizeof what, "has a key or digest weaker than OpenSSL's security level allows");
        break;
    default: snprintf(what, sizeof what, "was refused"); break;
    }
    const char *openssl = X509_verify_cert_error_string(err);
    if (depth > 0 && !of_chain) /* one of the CAs the peer sent, not its own certificate */
        snprintf(out, size, "a CA certificate in the %s's chain (depth %d) %s (OpenSSL: %s)", peer, depth,
                 what, openssl);
    else
        snprintf(out, size, "the %s's certificate %s (OpenSSL: %s)", peer, what, openssl);
}
