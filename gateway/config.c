/* Reading and checking iotgw's YAML configuration (docs/configuration.md). */
#include "gateway/config.h"

#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/crypto.h>

#include "codecs/assert.h"
#include "codecs/fleet_file.h"
#include "codecs/hostport.h"
#include "codecs/identity.h"
#include "codecs/shard.h"
#include "codecs/types.h"
#include "codecs/yaml_doc.h"
#include "gateway/settings.h"

#define MAX_KEY_FILE 1024

typedef struct reader {
    iotgw_yaml y;
    iotgw_config *c;
    iotgw_diag *diag;
    char dir[1024]; /* the config file's directory, for relative paths */
} reader;

static char *dup_text(reader *r, yaml_node_t *n, const char *path)
{
    const char *t = iotgw_yaml_text(&r->y, n, path, r->diag);
    if (!t)
        return NULL;
    char *s = strdup(t);
    if (!s)
        iotgw_diag_fail(r->diag, IOTGW_ERR_NOMEM, "out of memory");
    return s;
}

/* An optional string setting; 0 when absent or read. */
static int opt_text(reader *r, yaml_node_t *map, const char *key, const char *path, char **out)
{
    yaml_node_t *n = iotgw_yaml_get(&r->y, map, key);
    if (!n)
        return 0;
    char p[160];
    snprintf(p, sizeof p, "%s.%s", path, key);
    free(*out);
    *out = dup_text(r, n, p);
    return *out ? 0 : IOTGW_ERR_CONFIG;
}

static int resolve_path(reader *r, yaml_node_t *n, const char *p, char **out);

/* One setting of the table (gateway/settings.h), when the file has it. */
static int load_setting(reader *r, yaml_node_t *map, const iotgw_setting *s)
{
    yaml_node_t *n = iotgw_yaml_get(&r->y, map, iotgw_setting_key(s));
    if (!n)
        return 0;
    char *field = (char *)r->c + s->offset;
    int64_t v;
    int rc;
    switch (s->type) {
    case IOTGW_SETTING_UINT:
    case IOTGW_SETTING_INT:
    case IOTGW_SETTING_UINT64:
    case IOTGW_SETTING_RATE:
        rc = iotgw_yaml_int(&r->y, n, s->name, s->min, s->max, &v, r->diag);
        if (rc)
            return rc;
        if (s->type == IOTGW_SETTING_UINT)
            *(unsigned *)(void *)field = (unsigned)v;
        else if (s->type == IOTGW_SETTING_INT)
            *(int *)(void *)field = (int)v;
        else if (s->type == IOTGW_SETTING_UINT64)
            *(uint64_t *)(void *)field = (uint64_t)v;
        else
            *(double *)(void *)field = (double)v;
        return 0;
    case IOTGW_SETTING_BOOL: return iotgw_yaml_bool(&r->y, n, s->name, (int *)(void *)field, r->diag);
    case IOTGW_SETTING_CHOICE: {
        const char *t = iotgw_yaml_text(&r->y, n, s->name, r->diag);
        if (!t)
            return IOTGW_ERR_CONFIG;
        for (size_t k = 0; s->words[k]; k++)
            if (!strcmp(t, s->words[k])) {
                *(int *)(void *)field = s->values[k];
                return 0;
            }
        char expected[128] = "";
        for (size_t k = 0; s->words[k]; k++)
            snprintf(expected + strlen(expected), sizeof expected - strlen(expected), "%s%s",
                     k == 0            ? ""
                     : s->words[k + 1] ? ", "
                                       : " or ",
                     s->words[k]);
        return iotgw_yaml_fail(&r->y, n, s->name, r->diag, "expected %s, got \"%s\"", expected, t);
    }
    case IOTGW_SETTING_TEXT:
    case IOTGW_SETTING_PATH: {
        char **out = (char **)(void *)field;
        free(*out);
        if (!(*out = dup_text(r, n, s->name)))
            return IOTGW_ERR_CONFIG;
        return s->type == IOTGW_SETTING_PATH ? resolve_path(r, n, s->name, out) : 0;
    }
    }
    return 0;
}

/* A section's settings from the table, after checking that the section holds only
 * those keys and the extra ones (its structured settings, read by the caller). */
static int load_section(reader *r, yaml_node_t *map, const char *section, const char *const *extra)
{
    const char *keys[64];
    size_t n = 0, i = 0;
    for (const iotgw_setting *st; (st = iotgw_settings_next(section, &i));) {
        IOTGW_ASSERT(n < sizeof keys / sizeof keys[0] - 1); /* the table, not the file, sets n */
        keys[n++] = iotgw_setting_key(st);
    }
    for (size_t k = 0; extra && extra[k]; k++) {
        IOTGW_ASSERT(n < sizeof keys / sizeof keys[0] - 1);
        keys[n++] = extra[k];
    }
    keys[n] = NULL;
    int rc = iotgw_yaml_check_keys(&r->y, map, section, keys, r->diag);
    i = 0;
    for (const iotgw_setting *st; !rc && (st = iotgw_settings_next(section, &i));)
        rc = load_setting(r, map, st);
    return rc;
}

static int parse_listen(reader *r, yaml_node_t *n, const char *path, iotgw_config_listen *out)
{
    const char *t = iotgw_yaml_text(&r->y, n, path, r->diag);
    if (!t)
        return IOTGW_ERR_CONFIG;
    char address[256];
    if (iotgw_hostport_parse(t, address, sizeof address, &out->port))
        return iotgw_yaml_fail(&r->y, n, path, r->diag,
                               "expected ADDRESS:PORT (e.g. 0.0.0.0:7000, [::]:7000), got \"%s\"", t);
    out->address = strdup(address);
    return out->address ? 0 : IOTGW_ERR_NOMEM;
}

/* A secret given in the file (n's text), in a file it names (relative to the
 * configuration's folder), or in an environment variable it names, into buf
 * (MAX_KEY_FILE + 1 bytes; the caller cleanses it). */
static int read_secret(reader *r, yaml_node_t *n, const char *p, int is_file, int is_env, char *buf)
{
    const char *t = iotgw_yaml_text(&r->y, n, p, r->diag);
    if (!t)
        return IOTGW_ERR_CONFIG;
    if (is_file) {
        char file[2048];
        snprintf(file, sizeof file, "%s%s%s", t[0] == '/' ? "" : r->dir, t[0] == '/' ? "" : "/", t);
        FILE *f = fopen(file, "r");
        if (!f)
            return iotgw_yaml_fail(&r->y, n, p, r->diag, "cannot read %s: %s", file, strerror(errno));
        size_t len = fread(buf, 1, MAX_KEY_FILE, f);
        fclose(f);
        buf[len] = '\0';
        while (len && isspace((unsigned char)buf[len - 1]))
            buf[--len] = '\0';
    } else if (is_env) {
        const char *v = getenv(t);
        if (!v || !*v)
            return iotgw_yaml_fail(&r->y, n, p, r->diag, "environment variable %s is not set", t);
        snprintf(buf, MAX_KEY_FILE + 1, "%s", v);
    } else {
        snprintf(buf, MAX_KEY_FILE + 1, "%s", t);
    }
    return 0;
}

static int load_hub(reader *r, yaml_node_t *hub)
{
    int rc = load_section(r, hub, "hub", NULL);
    if (!rc && !r->c->hub_host)
        rc = iotgw_yaml_fail(&r->y, hub, "hub", r->diag, "hostName is required (the IoT Hub's host name)");
    return rc;
}

/* *out names a file: relative to the config file's directory, and readable. */
static int resolve_path(reader *r, yaml_node_t *n, const char *p, char **out)
{
    if ((*out)[0] != '/') {
        char full[2048];
        snprintf(full, sizeof full, "%s/%s", r->dir, *out);
        free(*out);
        if (!(*out = strdup(full)))
            return IOTGW_ERR_NOMEM;
    }
    if (access(*out, R_OK))
        return iotgw_yaml_fail(&r->y, n, p, r->diag, "cannot read %s: %s", *out, strerror(errno));
    return 0;
}

/* A readable file named in the configuration, relative to the config file's directory. */
static int opt_path(reader *r, yaml_node_t *map, const char *key, const char *path, char **out)
{
    int rc = opt_text(r, map, key, path, out);
    if (rc || !*out)
        return rc;
    char p[160];
    snprintf(p, sizeof p, "%s.%s", path, key);
    return resolve_path(r, iotgw_yaml_get(&r->y, map, key), p, out);
}

static int load_tls(reader *r, yaml_node_t *t)
{
    static const char *const keys[] = {"cert", "key", "clientCa", NULL};
    iotgw_config *c = r->c;
    int rc = iotgw_yaml_check_keys(&r->y, t, "devices.tls", keys, r->diag);
    if (!rc && !iotgw_yaml_get(&r->y, t, "cert"))
        rc = iotgw_yaml_fail(&r->y, t, "devices.tls", r->diag,
                             "cert (the server certificate, PEM) is required");
    if (!rc)
        rc = opt_path(r, t, "cert", "devices.tls", &c->tls_cert);
    if (!rc)
        rc = opt_path(r, t, "key", "devices.tls", &c->tls_key);
    if (!rc)
        rc = opt_path(r, t, "clientCa", "devices.tls", &c->tls_client_ca);
    return rc;
}

/* ADDRESS:PORT, or a list of them, at path. */
static int parse_listen_list(reader *r, yaml_node_t *ln, const char *path, iotgw_config_listen **out,
                             size_t *count)
{
    int n = ln->type == YAML_SCALAR_NODE ? 1 : iotgw_yaml_seq_len(&r->y, ln, path, r->diag);
    if (n < 0)
        return IOTGW_ERR_CONFIG;
    *out = calloc((size_t)n + 1, sizeof **out);
    if (!*out)
        return IOTGW_ERR_NOMEM;
    int rc = 0;
    for (int i = 0; !rc && i < n; i++) {
        char p[64];
        snprintf(p, sizeof p, "%s[%d]", path, i);
        yaml_node_t *item = ln->type == YAML_SCALAR_NODE ? ln : iotgw_yaml_seq_item(&r->y, ln, i);
        rc = parse_listen(r, item, ln->type == YAML_SCALAR_NODE ? path : p, &(*out)[i]);
        if (!rc)
            ++*count;
    }
    return rc;
}

/* devices.mqtt: IoT Hub's MQTT for devices written with the Azure IoT SDKs. */
static int load_mqtt(reader *r, yaml_node_t *m)
{
    static const char *const keys[] = {"listen", "webSocketListen", NULL};
    int rc = iotgw_yaml_check_keys(&r->y, m, "devices.mqtt", keys, r->diag);
    yaml_node_t *ln = rc ? NULL : iotgw_yaml_get(&r->y, m, "listen");
    yaml_node_t *wn = rc ? NULL : iotgw_yaml_get(&r->y, m, "webSocketListen");
    if (!rc && !ln && !wn)
        rc = iotgw_yaml_fail(
            &r->y, m, "devices.mqtt", r->diag,
            "listen (ADDRESS:PORT, e.g. \"0.0.0.0:8883\") or webSocketListen (\"0.0.0.0:443\") is "
            "required");
    if (!rc && ln)
        rc = parse_listen_list(r, ln, "devices.mqtt.listen", &r->c->mqtt_listen, &r->c->nmqtt_listen);
    if (!rc && wn)
        rc = parse_listen(r, wn, "devices.mqtt.webSocketListen", &r->c->ws_listen);
    return rc;
}

/* devices.amqp: IoT Hub's AMQP for devices written with the Azure IoT SDKs. */
static int load_amqp(reader *r, yaml_node_t *m)
{
    static const char *const keys[] = {"listen", NULL};
    int rc = iotgw_yaml_check_keys(&r->y, m, "devices.amqp", keys, r->diag);
    yaml_node_t *ln = rc ? NULL : iotgw_yaml_get(&r->y, m, "listen");
    if (!rc && !ln)
        rc = iotgw_yaml_fail(&r->y, m, "devices.amqp", r->diag,
                             "listen (ADDRESS:PORT, e.g. \"0.0.0.0:5671\") is required");
    if (!rc)
        rc = parse_listen_list(r, ln, "devices.amqp.listen", &r->c->amqp_listen, &r->c->namqp_listen);
    return rc;
}

static int load_devices_section(reader *r, yaml_node_t *d)
{
    static const char *const structured[] = {"listen", "tls", "mqtt", "amqp", "webSocketListen", NULL};
    iotgw_config *c = r->c;
    int rc = load_section(r, d, "devices", structured);
    yaml_node_t *ln = rc ? NULL : iotgw_yaml_get(&r->y, d, "listen");
    if (ln)
        rc = parse_listen_list(r, ln, "devices.listen", &c->listen, &c->nlisten);
    yaml_node_t *tn = rc ? NULL : iotgw_yaml_get(&r->y, d, "tls");
    if (tn)
        rc = load_tls(r, tn);
    yaml_node_t *mn = rc ? NULL : iotgw_yaml_get(&r->y, d, "mqtt");
    if (mn)
        rc = load_mqtt(r, mn);
    if (!rc && mn && !c->tls_cert)
        rc = iotgw_yaml_fail(&r->y, mn, "devices.mqtt", r->diag,
                             "MQTT devices connect over TLS: devices.tls.cert and key are needed");
    yaml_node_t *an = rc ? NULL : iotgw_yaml_get(&r->y, d, "amqp");
    if (an)
        rc = load_amqp(r, an);
    if (!rc && an && !c->tls_cert)
        rc = iotgw_yaml_fail(&r->y, an, "devices.amqp", r->diag,
                             "AMQP devices connect over TLS: devices.tls.cert and key are needed");
    yaml_node_t *wn = rc ? NULL : iotgw_yaml_get(&r->y, d, "webSocketListen");
    if (wn && c->ws_listen.address)
        rc = iotgw_yaml_fail(&r->y, wn, "devices.webSocketListen", r->diag,
                             "set devices.webSocketListen or devices.mqtt.webSocketListen (its older "
                             "name), not both");
    else if (wn)
        rc = parse_listen(r, wn, "devices.webSocketListen", &c->ws_listen);
    if (!rc && wn && !c->tls_cert)
        rc = iotgw_yaml_fail(&r->y, wn, "devices.webSocketListen", r->diag,
                             "WebSocket devices connect over TLS: devices.tls.cert and key are needed");
    return rc;
}

/* where the ops endpoint listens unless ops.listen says otherwise (edgeHub's metrics port) */
#define OPS_DEFAULT_ADDRESS "127.0.0.1"
#define OPS_DEFAULT_PORT    9600

/* ops: {listen: ADDRESS:PORT | off, token | tokenFile | tokenEnv}. The device view
 * (/devices) names devices and their addresses: off a loopback address it needs the
 * token. */
static int load_ops(reader *r, yaml_node_t *o)
{
    static const char *const keys[] = {"listen", "token", "tokenFile", "tokenEnv", NULL};
    iotgw_config *c = r->c;
    int rc = iotgw_yaml_check_keys(&r->y, o, "ops", keys, r->diag);
    yaml_node_t *ln = rc ? NULL : iotgw_yaml_get(&r->y, o, "listen");
    if (ln) {
        const char *t = iotgw_yaml_text(&r->y, ln, "ops.listen", r->diag);
        if (!t)
            return IOTGW_ERR_CONFIG;
        free(c->ops_listen.address);
        c->ops_listen.address = NULL;
        if (strcmp(t, "off") != 0)
            rc = parse_listen(r, ln, "ops.listen", &c->ops_listen);
    }
    yaml_node_t *tk = iotgw_yaml_get(&r->y, o, "token"), *tf = iotgw_yaml_get(&r->y, o, "tokenFile"),
                *te = iotgw_yaml_get(&r->y, o, "tokenEnv");
    if (!rc && !!tk + !!tf + !!te > 1)
        rc = iotgw_yaml_fail(&r->y, o, "ops", r->diag, "give at most one of token, tokenFile, tokenEnv");
    if (!rc && (tk || tf || te)) {
        char buf[MAX_KEY_FILE + 1];
        rc = read_secret(r,
                         tk   ? tk
                         : tf ? tf
                              : te,
                         tk   ? "ops.token"
                         : tf ? "ops.tokenFile"
                              : "ops.tokenEnv",
                         tf != NULL, te != NULL, buf);
        if (!rc && strlen(buf) < 16)
            rc = iotgw_yaml_fail(&r->y,
                                 tk   ? tk
                                 : tf ? tf
                                      : te,
                                 "ops.token", r->diag, "a token of at least 16 characters");
        if (!rc && !(c->ops_token = strdup(buf)))
            rc = IOTGW_ERR_NOMEM;
        OPENSSL_cleanse(buf, sizeof buf);
    }
    return rc;
}

static int method_type(reader *r, yaml_node_t *m, const char *key, const char *path, char **out)
{
    yaml_node_t *n = iotgw_yaml_get(&r->y, m, key);
    if (!n)
        return 0;
    char p[200];
    snprintf(p, sizeof p, "%s.%s", path, key);
    const char *t = iotgw_yaml_text(&r->y, n, p, r->diag);
    if (!t)
        return IOTGW_ERR_CONFIG;
    const ProtobufCMessageDescriptor *d = iotgw_types_find(iotgw_types_builtin(), t);
    if (!d)
        return iotgw_yaml_fail(&r->y, n, p, r->diag,
                               "unknown message type \"%s\" (known: the types in schemas/)", t);
    *out = strdup(d->name);
    return *out ? 0 : IOTGW_ERR_NOMEM;
}

static int load_methods(reader *r, yaml_node_t *ms)
{
    if (ms->type != YAML_MAPPING_NODE)
        return iotgw_yaml_fail(&r->y, ms, "methods", r->diag, "expected a mapping of method names");
    size_t n = (size_t)(ms->data.mapping.pairs.top - ms->data.mapping.pairs.start);
    r->c->methods = calloc(n + 1, sizeof *r->c->methods);
    if (!r->c->methods)
        return IOTGW_ERR_NOMEM;
    static const char *const keys[] = {"request", "response", NULL};
    for (yaml_node_pair_t *p = ms->data.mapping.pairs.start; p < ms->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(&r->y.doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(&r->y.doc, p->value);
        iotgw_config_method *m = &r->c->methods[r->c->nmethods];
        if (!(m->name = dup_text(r, kn, "methods")))
            return IOTGW_ERR_CONFIG;
        r->c->nmethods++;
        char path[200];
        snprintf(path, sizeof path, "methods.%s", m->name);
        int rc = iotgw_yaml_check_keys(&r->y, vn, path, keys, r->diag);
        if (!rc)
            rc = method_type(r, vn, "request", path, &m->request_type);
        if (!rc)
            rc = method_type(r, vn, "response", path, &m->response_type);
        if (rc)
            return rc;
    }
    return 0;
}

/* key, keyFile or keyEnv: at most one, exactly one when required (else *out stays NULL
 * when none is given); the result must be base64 of 16 to 64 bytes. */
static int read_key(reader *r, yaml_node_t *dn, const char *path, int required, char **out)
{
    yaml_node_t *k = iotgw_yaml_get(&r->y, dn, "key"), *kf = iotgw_yaml_get(&r->y, dn, "keyFile"),
                *ke = iotgw_yaml_get(&r->y, dn, "keyEnv");
    int given = !!k + !!kf + !!ke;
    if (given > 1 || (required && !given))
        return iotgw_yaml_fail(&r->y, dn, path, r->diag, "give exactly one of key, keyFile, keyEnv");
    if (!given)
        return 0;
    char p[200];
    yaml_node_t *n = k ? k : kf ? kf : ke;
    snprintf(p, sizeof p, "%s.%s", path, k ? "key" : kf ? "keyFile" : "keyEnv");
    char buf[MAX_KEY_FILE + 1];
    int rc = read_secret(r, n, p, kf != NULL, ke != NULL, buf);
    if (rc)
        return rc;
    const char *t = buf;
    if (!iotgw_key_is_valid(t)) {
        OPENSSL_cleanse(buf, sizeof buf);
        return iotgw_yaml_fail(&r->y, n, p, r->diag, "not a base64 key of 16 to 64 bytes");
    }
    *out = strdup(t);
    OPENSSL_cleanse(buf, sizeof buf);
    return *out ? 0 : IOTGW_ERR_NOMEM;
}

static int compare_devices(const void *a, const void *b)
{
    return strcmp(((const iotgw_config_device *)a)->id, ((const iotgw_config_device *)b)->id);
}

/* A slot for one more device; NULL when out of memory. */
static iotgw_config_device *new_device(iotgw_config *c, size_t *cap)
{
    if (c->ndevices == *cap) {
        size_t n = *cap ? *cap * 2 : 16;
        iotgw_config_device *d = realloc(c->devices, n * sizeof *d);
        if (!d)
            return NULL;
        c->devices = d;
        *cap = n;
    }
    iotgw_config_device *d = &c->devices[c->ndevices++];
    memset(d, 0, sizeof *d);
    return d;
}

static const char NO_KEY_HELP[] = "a device without a key authenticates by client certificate only, which "
                                  "needs devices.tls.clientCa and fleet.deviceConnectPolicy";

static int keyless_allowed(const iotgw_config *c)
{
    return c->tls_client_ca && c->policy_key;
}

static int load_device_list(reader *r, yaml_node_t *ds, size_t *cap)
{
    static const char *const dkeys[] = {"id", "key", "keyFile", "keyEnv", "disabled", NULL};
    int n = iotgw_yaml_seq_len(&r->y, ds, "fleet.devices", r->diag);
    if (n < 0)
        return IOTGW_ERR_CONFIG;
    iotgw_config *c = r->c;
    for (int i = 0; i < n; i++) {
        yaml_node_t *dn = iotgw_yaml_seq_item(&r->y, ds, i);
        char path[64];
        snprintf(path, sizeof path, "fleet.devices[%d]", i);
        int rc = iotgw_yaml_check_keys(&r->y, dn, path, dkeys, r->diag);
        if (rc)
            return rc;
        yaml_node_t *idn = iotgw_yaml_get(&r->y, dn, "id");
        if (!idn)
            return iotgw_yaml_fail(&r->y, dn, path, r->diag, "id is required");
        iotgw_config_device *d = new_device(c, cap);
        if (!d)
            return IOTGW_ERR_NOMEM;
        char idpath[80];
        snprintf(idpath, sizeof idpath, "%s.id", path);
        if (!(d->id = dup_text(r, idn, idpath)))
            return IOTGW_ERR_CONFIG;
        iotgw_diag idd = {0};
        if (iotgw_identity_check(d->id, "device id", &idd))
            return iotgw_yaml_fail(&r->y, idn, idpath, r->diag, "%s", idd.text);
        if ((rc = read_key(r, dn, path, !keyless_allowed(c), &d->key))) {
            if (!iotgw_yaml_get(&r->y, dn, "key") && !iotgw_yaml_get(&r->y, dn, "keyFile") &&
                !iotgw_yaml_get(&r->y, dn, "keyEnv"))
                return iotgw_yaml_fail(&r->y, dn, path, r->diag, "no key (key, keyFile or keyEnv): %s",
                                       NO_KEY_HELP);
            return rc;
        }
        yaml_node_t *dis = iotgw_yaml_get(&r->y, dn, "disabled");
        char dpath[80];
        snprintf(dpath, sizeof dpath, "%s.disabled", path);
        if (dis && (rc = iotgw_yaml_bool(&r->y, dis, dpath, &d->disabled, r->diag)))
            return rc;
    }
    return 0;
}

typedef struct file_reader {
    reader *r;
    size_t *cap;
} file_reader;

static int add_file_device(const iotgw_fleet_entry *e, void *ctx, char *why, size_t whylen)
{
    file_reader *fr = ctx;
    if (!e->key && !keyless_allowed(fr->r->c)) {
        snprintf(why, whylen, "device %s has no key: %s", e->id, NO_KEY_HELP);
        return IOTGW_ERR_CONFIG;
    }
    iotgw_config_device *d = new_device(fr->r->c, fr->cap);
    if (!d || !(d->id = strdup(e->id)) || (e->key && !(d->key = strdup(e->key)))) {
        snprintf(why, whylen, "out of memory");
        return IOTGW_ERR_NOMEM;
    }
    d->disabled = e->disabled;
    return 0;
}

/* fleet.devicesFile (codecs/fleet_file.h): the fleet's devices one per line, for fleets
 * too large to list in YAML. */
static int load_devices_file(reader *r, yaml_node_t *fn, size_t *cap)
{
    char *file = NULL;
    int rc = opt_path(r, fn, "devicesFile", "fleet", &file);
    file_reader fr = {.r = r, .cap = cap};
    if (!rc)
        rc = iotgw_fleet_file_read(file, add_file_device, &fr, r->diag);
    free(file);
    return rc == IOTGW_ERR_IO ? IOTGW_ERR_CONFIG : rc;
}

/* fleet.deviceConnectPolicy: a hub policy with DeviceConnect that signs every device's
 * hub tokens (its name becomes the tokens' skn). */
static int load_policy(reader *r, yaml_node_t *pn)
{
    static const char *const keys[] = {"name", "key", "keyFile", "keyEnv", NULL};
    int rc = iotgw_yaml_check_keys(&r->y, pn, "fleet.deviceConnectPolicy", keys, r->diag);
    if (!rc && !iotgw_yaml_get(&r->y, pn, "name"))
        rc = iotgw_yaml_fail(&r->y, pn, "fleet.deviceConnectPolicy", r->diag,
                             "name is required (the hub's shared access policy, e.g. device)");
    if (!rc)
        rc = opt_text(r, pn, "name", "fleet.deviceConnectPolicy", &r->c->policy_name);
    if (!rc)
        rc = read_key(r, pn, "fleet.deviceConnectPolicy", 1, &r->c->policy_key);
    return rc;
}

/* An environment variable's name as it may appear in messages: 1 to 128 of A-Z, a-z,
 * 0-9 and '_', not starting with a digit. */
static int env_name_ok(const char *t)
{
    size_t n = strlen(t);
    if (!n || n > 128 || isdigit((unsigned char)t[0]))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)t[i]) && t[i] != '_')
            return 0;
    return 1;
}

/* fleet.shard.index: {podNameEnv: VAR}: the ordinal at the end of the pod name VAR holds
 * (a StatefulSet's pod iotgw-2 serves shard 2); on Kubernetes VAR comes from the
 * downward API (fieldRef: metadata.name). */
static int shard_index_from_pod_name(reader *r, yaml_node_t *in, unsigned count, unsigned *index)
{
    static const char *const keys[] = {"podNameEnv", NULL};
    static const char path[] = "fleet.shard.index.podNameEnv";
    int rc = iotgw_yaml_check_keys(&r->y, in, "fleet.shard.index", keys, r->diag);
    yaml_node_t *en = rc ? NULL : iotgw_yaml_get(&r->y, in, "podNameEnv");
    if (!rc && !en)
        rc = iotgw_yaml_fail(&r->y, in, "fleet.shard.index", r->diag,
                             "a number, or podNameEnv: the environment variable that holds the pod's name "
                             "(e.g. {podNameEnv: POD_NAME})");
    const char *var = rc ? NULL : iotgw_yaml_text(&r->y, en, path, r->diag);
    if (rc || !var)
        return IOTGW_ERR_CONFIG;
    if (!env_name_ok(var))
        return iotgw_yaml_fail(&r->y, en, path, r->diag,
                               "not an environment variable's name (1 to 128 of A-Z, a-z, 0-9, _)");
    const char *value = getenv(var);
    if (!value)
        return iotgw_yaml_fail(&r->y, en, path, r->diag,
                               "environment variable %s is not set (on Kubernetes: env %s from the downward "
                               "API, fieldRef metadata.name)",
                               var, var);
    iotgw_diag d = {0};
    unsigned ordinal = 0;
    if (iotgw_shard_ordinal(value, &ordinal, &d))
        return iotgw_yaml_fail(&r->y, en, path, r->diag, "environment variable %s %s", var, d.text);
    if (ordinal >= count)
        return iotgw_yaml_fail(
            &r->y, en, path, r->diag,
            "environment variable %s is \"%s\": ordinal %u is not below fleet.shard.count %u "
            "(more replicas than shards?)",
            var, value, ordinal, count);
    size_t n = strlen(var) + 1 + strlen(value) + 1;
    if (!(r->c->shard_from = malloc(n)))
        return IOTGW_ERR_NOMEM;
    snprintf(r->c->shard_from, n, "%s=%s", var, value);
    *index = ordinal;
    return 0;
}

/* fleet.shard: {count: N, index: I | {podNameEnv: VAR}}: the fleet is split over N
 * gateways and this one serves shard I (codecs/shard.h). */
static int load_shard(reader *r, yaml_node_t *sn)
{
    static const char *const keys[] = {"count", "index", NULL};
    iotgw_config *c = r->c;
    int rc = iotgw_yaml_check_keys(&r->y, sn, "fleet.shard", keys, r->diag);
    if (rc)
        return rc;
    yaml_node_t *cn = iotgw_yaml_get(&r->y, sn, "count"), *in = iotgw_yaml_get(&r->y, sn, "index");
    if (!cn || !in)
        return iotgw_yaml_fail(&r->y, sn, "fleet.shard", r->diag,
                               "%s is required (e.g. {count: 3, index: {podNameEnv: POD_NAME}})",
                               cn ? "index" : "count");
    int64_t count, index;
    if ((rc = iotgw_yaml_int(&r->y, cn, "fleet.shard.count", 1, IOTGW_SHARD_MAX, &count, r->diag)))
        return rc;
    if (in->type == YAML_MAPPING_NODE) {
        unsigned ordinal = 0;
        if ((rc = shard_index_from_pod_name(r, in, (unsigned)count, &ordinal)))
            return rc;
        index = ordinal;
    } else {
        if ((rc = iotgw_yaml_int(&r->y, in, "fleet.shard.index", 0, IOTGW_SHARD_MAX - 1, &index, r->diag)))
            return rc;
        if (index >= count)
            return iotgw_yaml_fail(&r->y, in, "fleet.shard.index", r->diag,
                                   "%lld is not below fleet.shard.count %lld (shards are 0..count-1)",
                                   (long long)index, (long long)count);
    }
    c->shard_count = (unsigned)count;
    c->shard_index = (unsigned)index;
    c->shard_given = 1;
    return 0;
}

/* With fleet.shard: keep this gateway's devices in c->devices (still sorted), and of the
 * others only their ids, in c->elsewhere (sorted too); their keys are wiped. */
static int keep_shard(iotgw_config *c)
{
    c->fleet_size = c->ndevices;
    if (c->shard_count <= 1)
        return 0;
    size_t others = 0;
    for (size_t i = 0; i < c->ndevices; i++)
        others += iotgw_shard_of(c->devices[i].id, c->shard_count) != c->shard_index;
    if (others && !(c->elsewhere = malloc(others * sizeof *c->elsewhere)))
        return IOTGW_ERR_NOMEM;
    size_t kept = 0;
    for (size_t i = 0; i < c->ndevices; i++) {
        iotgw_config_device *d = &c->devices[i];
        if (iotgw_shard_of(d->id, c->shard_count) == c->shard_index) {
            c->devices[kept++] = *d;
            continue;
        }
        c->elsewhere[c->nelsewhere++] = d->id;
        if (d->key) {
            OPENSSL_cleanse(d->key, strlen(d->key));
            free(d->key);
        }
    }
    c->ndevices = kept;
    return 0;
}

static int load_fleet(reader *r, yaml_node_t *f)
{
    static const char *const keys[] = {"devices", "devicesFile", "deviceConnectPolicy", "shard", NULL};
    int rc = iotgw_yaml_check_keys(&r->y, f, "fleet", keys, r->diag);
    yaml_node_t *n;
    size_t cap = 0;
    if (!rc && (n = iotgw_yaml_get(&r->y, f, "deviceConnectPolicy")))
        rc = load_policy(r, n);
    if (!rc && (n = iotgw_yaml_get(&r->y, f, "shard")))
        rc = load_shard(r, n);
    if (!rc && (n = iotgw_yaml_get(&r->y, f, "devices")))
        rc = load_device_list(r, n, &cap);
    if (!rc && iotgw_yaml_get(&r->y, f, "devicesFile"))
        rc = load_devices_file(r, f, &cap);
    if (rc)
        return rc;
    iotgw_config *c = r->c;
    /* sorted by id: lookups at each device's hello are a binary search */
    if (c->ndevices)
        qsort(c->devices, c->ndevices, sizeof *c->devices, compare_devices);
    for (size_t k = 1; k < c->ndevices; k++)
        if (!strcmp(c->devices[k - 1].id, c->devices[k].id))
            return iotgw_yaml_fail(&r->y, f, "fleet", r->diag, "device \"%s\" is listed twice",
                                   c->devices[k].id);
    return keep_shard(c);
}

/* store: the table's settings; the path (a folder, which the store makes when missing)
 * relative to the configuration's folder. */
static int load_store(reader *r, yaml_node_t *n)
{
    int rc = load_section(r, n, "store", NULL);
    if (rc)
        return rc;
    iotgw_config *c = r->c;
    if (!c->store_path)
        return iotgw_yaml_fail(&r->y, n, "store.path", r->diag,
                               "a store needs its path (a folder); without the store section there is none");
    if (!*c->store_path)
        return iotgw_yaml_fail(&r->y, n, "store.path", r->diag, "empty");
    if (c->store_path[0] != '/') {
        char *abs = malloc(strlen(r->dir) + strlen(c->store_path) + 2);
        if (!abs)
            return IOTGW_ERR_NOMEM;
        sprintf(abs, "%s/%s", r->dir, c->store_path);
        free(c->store_path);
        c->store_path = abs;
    }
    return 0;
}

int iotgw_config_load(const char *file, iotgw_config **out, iotgw_diag *diag)
{
    reader r = {.diag = diag};
    iotgw_config *c = calloc(1, sizeof *c);
    if (!c)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    r.c = c;
    iotgw_settings_defaults(c);
    c->shard_count = 1;
    c->file = strdup(file);
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", file);
    snprintf(r.dir, sizeof r.dir, "%s", dirname(tmp));
    int rc = iotgw_yaml_load(&r.y, file, NULL, diag);
    yaml_node_t *root = rc ? NULL : iotgw_yaml_root(&r.y);
    static const char *const keys[] = {"gatewayId", "hub", "devices", "telemetry", "methods",
                                       "fleet",     "ops", "log",     "store",     NULL};
    if (!rc)
        rc = iotgw_yaml_check_keys(&r.y, root, "", keys, diag);
    yaml_node_t *hub = rc ? NULL : iotgw_yaml_get(&r.y, root, "hub");
    if (!rc && !hub)
        rc = iotgw_yaml_fail(&r.y, root, "hub", diag, "the hub section is required");
    if (!rc)
        rc = load_hub(&r, hub);
    size_t i = 0;
    for (const iotgw_setting *st; !rc && (st = iotgw_settings_next("", &i));)
        rc = load_setting(&r, root, st);
    yaml_node_t *n;
    if (!rc && (n = iotgw_yaml_get(&r.y, root, "devices")))
        rc = load_devices_section(&r, n);
    if (!rc && (n = iotgw_yaml_get(&r.y, root, "telemetry")))
        rc = load_section(&r, n, "telemetry", NULL);
    if (!rc && (n = iotgw_yaml_get(&r.y, root, "methods")))
        rc = load_methods(&r, n);
    if (!rc && (n = iotgw_yaml_get(&r.y, root, "fleet")))
        rc = load_fleet(&r, n);
    c->ops_listen.port = OPS_DEFAULT_PORT;
    if (!rc && !(c->ops_listen.address = strdup(OPS_DEFAULT_ADDRESS)))
        rc = IOTGW_ERR_NOMEM;
    if (!rc && (n = iotgw_yaml_get(&r.y, root, "ops")))
        rc = load_ops(&r, n);
    if (!rc && (n = iotgw_yaml_get(&r.y, root, "log")))
        rc = load_section(&r, n, "log", NULL);
    if (!rc && (n = iotgw_yaml_get(&r.y, root, "store")))
        rc = load_store(&r, n);
    if (!rc && !c->nlisten && !c->nmqtt_listen && !c->namqp_listen && !c->ws_listen.address)
        rc = iotgw_yaml_fail(&r.y, root, "devices.listen", diag,
                             "no listen address: devices.listen, e.g. \"0.0.0.0:7000\"");
    iotgw_yaml_free(&r.y);
    if (rc) {
        iotgw_config_free(c);
        return rc == IOTGW_ERR_NOMEM ? iotgw_diag_fail(diag, rc, "out of memory") : rc;
    }
    *out = c;
    return 0;
}

void iotgw_config_free(iotgw_config *c)
{
    if (!c)
        return;
    free(c->ops_listen.address);
    if (c->ops_token) {
        OPENSSL_cleanse(c->ops_token, strlen(c->ops_token));
        free(c->ops_token);
    }
    for (size_t i = 0; i < c->ndevices; i++) {
        free(c->devices[i].id);
        if (c->devices[i].key) {
            OPENSSL_cleanse(c->devices[i].key, strlen(c->devices[i].key));
            free(c->devices[i].key);
        }
    }
    for (size_t i = 0; i < c->nelsewhere; i++)
        free(c->elsewhere[i]);
    free(c->elsewhere);
    free(c->shard_from);
    for (size_t i = 0; c->methods && c->methods[i].name; i++) {
        free(c->methods[i].name);
        free(c->methods[i].request_type);
        free(c->methods[i].response_type);
    }
    for (size_t i = 0; i < c->nlisten; i++)
        free(c->listen[i].address);
    free(c->listen);
    for (size_t i = 0; i < c->nmqtt_listen; i++)
        free(c->mqtt_listen[i].address);
    free(c->mqtt_listen);
    free(c->ws_listen.address);
    for (size_t i = 0; i < c->namqp_listen; i++)
        free(c->amqp_listen[i].address);
    free(c->amqp_listen);
    free(c->methods);
    free(c->devices);
    free(c->file);
    free(c->gateway_id);
    free(c->hub_host);
    free(c->hub_connect_host);
    free(c->hub_ca_file);
    free(c->hub_proxy);
    free(c->store_path);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->tls_client_ca);
    free(c->policy_name);
    if (c->policy_key) {
        OPENSSL_cleanse(c->policy_key, strlen(c->policy_key));
        free(c->policy_key);
    }
    free(c);
}

const iotgw_config_device *iotgw_config_device_find(const iotgw_config *c, const char *id)
{
    iotgw_config_device key = {.id = (char *)id};
    return c->ndevices ? bsearch(&key, c->devices, c->ndevices, sizeof key, compare_devices) : NULL;
}

static int compare_ids(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int iotgw_config_device_elsewhere(const iotgw_config *c, const char *id)
{
    if (!c->nelsewhere || !id)
        return -1;
    char *const *hit = bsearch(&id, c->elsewhere, c->nelsewhere, sizeof *c->elsewhere, compare_ids);
    return hit ? (int)iotgw_shard_of(*hit, c->shard_count) : -1;
}

const iotgw_config_method *iotgw_config_method_find(const iotgw_config *c, const char *name)
{
    for (size_t i = 0; i < c->nmethods; i++)
        if (!strcmp(c->methods[i].name, name))
            return &c->methods[i];
    return NULL;
}

void iotgw_config_hub_credential(const iotgw_config *c, const iotgw_config_device *d, const char **key,
                                 const char **policy_name)
{
    *key = c->policy_key ? c->policy_key : d->key;
    *policy_name = c->policy_key ? c->policy_name : NULL;
}
