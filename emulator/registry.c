#include "emulator/registry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/rand.h>

#include "codecs/base64.h"
#include "codecs/identity.h"
#include "codecs/yaml_doc.h"

#define HASH_BUCKETS 16384

struct emu_registry {
    char *path; /* NULL: in memory only */
    emu_policy *policies;
    int npolicies;
    emu_identity **ids;
    int nids, cap;
    emu_identity *buckets[HASH_BUCKETS];
};

static const struct {
    const char *name;
    unsigned bit;
} right_names[] = {
    {"RegistryRead", EMU_RIGHT_REGISTRY_READ},
    {"RegistryWrite", EMU_RIGHT_REGISTRY_WRITE},
    {"ServiceConnect", EMU_RIGHT_SERVICE_CONNECT},
    {"DeviceConnect", EMU_RIGHT_DEVICE_CONNECT},
};

char *emu_random_key(void)
{
    uint8_t raw[32];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return NULL;
    char *out = malloc(iotgw_base64_encoded_len(sizeof raw) + 1);
    if (out)
        iotgw_base64_encode(raw, sizeof raw, out);
    return out;
}

const char *emu_rights_text(unsigned rights, char *buf, size_t len)
{
    buf[0] = 0;
    for (size_t i = 0; i < sizeof right_names / sizeof right_names[0]; i++)
        if (rights & right_names[i].bit)
            snprintf(buf + strlen(buf), len - strlen(buf), "%s%s", buf[0] ? ", " : "", right_names[i].name);
    return buf;
}

static unsigned hash_id(const char *s)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % HASH_BUCKETS;
}

static int add_policy(emu_registry *r, const char *name, const char *pk, const char *sk, unsigned rights)
{
    emu_policy *p = realloc(r->policies, (size_t)(r->npolicies + 1) * sizeof *p);
    if (!p)
        return IOTGW_ERR_NOMEM;
    r->policies = p;
    p += r->npolicies;
    p->name = strdup(name);
    p->primary_key = pk ? strdup(pk) : emu_random_key();
    p->secondary_key = sk ? strdup(sk) : emu_random_key();
    p->rights = rights;
    r->npolicies++;
    return p->name && p->primary_key && p->secondary_key ? 0 : IOTGW_ERR_NOMEM;
}

static emu_registry *registry_alloc(void)
{
    return calloc(1, sizeof(emu_registry));
}

emu_registry *emu_registry_new(void)
{
    emu_registry *r = registry_alloc();
    if (!r)
        return NULL;
    unsigned all = EMU_RIGHT_REGISTRY_READ | EMU_RIGHT_REGISTRY_WRITE | EMU_RIGHT_SERVICE_CONNECT |
                   EMU_RIGHT_DEVICE_CONNECT;
    if (add_policy(r, "iothubowner", NULL, NULL, all) ||
        add_policy(r, "service", NULL, NULL, EMU_RIGHT_SERVICE_CONNECT) ||
        add_policy(r, "device", NULL, NULL, EMU_RIGHT_DEVICE_CONNECT) ||
        add_policy(r, "registryRead", NULL, NULL, EMU_RIGHT_REGISTRY_READ) ||
        add_policy(r, "registryReadWrite", NULL, NULL, EMU_RIGHT_REGISTRY_READ | EMU_RIGHT_REGISTRY_WRITE)) {
        emu_registry_free(r);
        return NULL;
    }
    return r;
}

static void identity_free(emu_identity *id)
{
    free(id->id);
    free(id->device_id);
    free(id->module_id);
    free(id->primary_key);
    free(id->secondary_key);
    json_decref(id->tags);
    json_decref(id->desired);
    json_decref(id->reported);
    free(id);
}

void emu_registry_remove(emu_registry *r, emu_identity *id)
{
    for (emu_identity **p = &r->buckets[hash_id(id->id)]; *p; p = &(*p)->hash_next)
        if (*p == id) {
            *p = id->hash_next;
            break;
        }
    for (int i = 0; i < r->nids; i++)
        if (r->ids[i] == id) {
            memmove(&r->ids[i], &r->ids[i + 1], (size_t)(r->nids - i - 1) * sizeof *r->ids);
            r->nids--;
            break;
        }
    identity_free(id);
}

void emu_registry_free(emu_registry *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->npolicies; i++) {
        free(r->policies[i].name);
        free(r->policies[i].primary_key);
        free(r->policies[i].secondary_key);
    }
    free(r->policies);
    for (int i = 0; i < r->nids; i++)
        identity_free(r->ids[i]);
    free(r->ids);
    free(r->path);
    free(r);
}

emu_policy *emu_registry_policy(emu_registry *r, const char *name)
{
    for (int i = 0; i < r->npolicies; i++)
        if (!strcmp(r->policies[i].name, name))
            return &r->policies[i];
    return NULL;
}

int emu_registry_policy_count(const emu_registry *r)
{
    return r->npolicies;
}

emu_policy *emu_registry_policy_at(emu_registry *r, int i)
{
    return &r->policies[i];
}

int emu_registry_count(const emu_registry *r)
{
    return r->nids;
}

emu_identity *emu_registry_at(emu_registry *r, int i)
{
    return r->ids[i];
}

static char *join_id(const char *device_id, const char *module_id)
{
    char *s;
    if (asprintf(&s, "%s%s%s", device_id, module_id ? "/" : "", module_id ? module_id : "") < 0)
        return NULL;
    return s;
}

emu_identity *emu_registry_find(emu_registry *r, const char *device_id, const char *module_id)
{
    char buf[2 * IOTGW_IDENTITY_MAX_LEN + 2];
    if (snprintf(buf, sizeof buf, "%s%s%s", device_id, module_id ? "/" : "", module_id ? module_id : "") >=
        (int)sizeof buf)
        return NULL;
    for (emu_identity *id = r->buckets[hash_id(buf)]; id; id = id->hash_next)
        if (!strcmp(id->id, buf))
            return id;
    return NULL;
}

static int check_key(const char *key, const char *what, iotgw_diag *diag)
{
    uint8_t raw[128];
    size_t n;
    if (strlen(key) > 88 || iotgw_base64_decode(key, strlen(key), raw, &n, 0, NULL) || n < 16 || n > 64)
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "%s must be base64 of 16 to 64 bytes", what);
    return 0;
}

int emu_registry_add(emu_registry *r, const char *device_id, const char *module_id, const char *primary_key,
                     const char *secondary_key, int enabled, emu_identity **out, iotgw_diag *diag)
{
    int rc = iotgw_identity_check(device_id, "deviceId", diag);
    if (!rc && module_id)
        rc = iotgw_identity_check(module_id, "moduleId", diag);
    if (!rc && primary_key)
        rc = check_key(primary_key, "primaryKey", diag);
    if (!rc && secondary_key)
        rc = check_key(secondary_key, "secondaryKey", diag);
    if (rc)
        return rc;
    if (emu_registry_find(r, device_id, module_id))
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "%s %s%s%s already exists",
                               module_id ? "module" : "device", device_id, module_id ? "/" : "",
                               module_id ? module_id : "");
    if (module_id && !emu_registry_find(r, device_id, NULL))
        return iotgw_diag_fail(diag, IOTGW_ERR_INVALID_ARG, "module %s/%s: no device %s", device_id,
                               module_id, device_id);
    if (r->nids == r->cap) {
        int cap = r->cap ? 2 * r->cap : 64;
        emu_identity **ids = realloc(r->ids, (size_t)cap * sizeof *ids);
        if (!ids)
            return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
        r->ids = ids;
        r->cap = cap;
    }
    emu_identity *id = calloc(1, sizeof *id);
    if (!id)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    id->id = join_id(device_id, module_id);
    id->device_id = strdup(device_id);
    id->module_id = module_id ? strdup(module_id) : NULL;
    id->primary_key = primary_key ? strdup(primary_key) : emu_random_key();
    id->secondary_key = secondary_key ? strdup(secondary_key) : emu_random_key();
    id->enabled = enabled;
    id->tags = json_object();
    id->desired = json_object();
    id->reported = json_object();
    id->desired_version = 1;
    id->reported_version = 1;
    uint64_t g = 0; /* IoT Hub's generation ids are 18 digits */
    RAND_bytes((unsigned char *)&g, sizeof g);
    snprintf(id->generation_id, sizeof id->generation_id, "63%016llu",
             (unsigned long long)(g % 10000000000000000ull));
    if (!id->id || !id->device_id || (module_id && !id->module_id) || !id->primary_key ||
        !id->secondary_key || !id->tags || !id->desired || !id->reported) {
        identity_free(id);
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    }
    unsigned h = hash_id(id->id);
    id->hash_next = r->buckets[h];
    r->buckets[h] = id;
    r->ids[r->nids++] = id;
    if (out)
        *out = id;
    return 0;
}

/* ------------------------------------------------------------------ loading */

static int load_policy(emu_registry *r, iotgw_yaml *y, yaml_node_t *n, const char *path, iotgw_diag *diag)
{
    static const char *const keys[] = {"name", "primaryKey", "secondaryKey", "rights", NULL};
    int rc = iotgw_yaml_check_keys(y, n, path, keys, diag);
    if (rc)
        return rc;
    yaml_node_t *name_n = iotgw_yaml_get(y, n, "name");
    if (!name_n)
        return iotgw_yaml_fail(y, n, path, diag, "a policy needs a name");
    const char *name = iotgw_yaml_text(y, name_n, path, diag);
    if (!name)
        return IOTGW_ERR_CONFIG;
    if (!*name || strlen(name) > 64 || strpbrk(name, " /;&=@"))
        return iotgw_yaml_fail(y, name_n, path, diag,
                               "policy name \"%s\" must be 1..64 characters without spaces or / ; & = @",
                               name);
    if (emu_registry_policy(r, name))
        return iotgw_yaml_fail(y, name_n, path, diag, "policy \"%s\" is listed twice", name);
    const char *pk = NULL, *sk = NULL;
    const char *fields[2] = {"primaryKey", "secondaryKey"};
    const char **vals[2] = {&pk, &sk};
    for (int i = 0; i < 2; i++) {
        yaml_node_t *kn = iotgw_yaml_get(y, n, fields[i]);
        if (!kn)
            continue;
        if (!(*vals[i] = iotgw_yaml_text(y, kn, path, diag)))
            return IOTGW_ERR_CONFIG;
        iotgw_diag d = {0};
        if (check_key(*vals[i], fields[i], &d))
            return iotgw_yaml_fail(y, kn, path, diag, "%s", d.text);
    }
    unsigned rights = 0;
    yaml_node_t *rn = iotgw_yaml_get(y, n, "rights");
    if (!rn)
        return iotgw_yaml_fail(y, n, path, diag, "policy \"%s\" needs rights", name);
    int count = iotgw_yaml_seq_len(y, rn, path, diag);
    if (count < 0)
        return count;
    for (int i = 0; i < count; i++) {
        yaml_node_t *item = iotgw_yaml_seq_item(y, rn, i);
        const char *t = iotgw_yaml_text(y, item, path, diag);
        if (!t)
            return IOTGW_ERR_CONFIG;
        unsigned bit = 0;
        for (size_t k = 0; k < sizeof right_names / sizeof right_names[0]; k++)
            if (!strcmp(t, right_names[k].name))
                bit = right_names[k].bit;
        if (!bit)
            return iotgw_yaml_fail(
                y, item, path, diag,
                "unknown right \"%s\" (RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect)", t);
        rights |= bit;
    }
    return add_policy(r, name, pk, sk, rights) ? iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory") : 0;
}

static int load_identity(emu_registry *r, iotgw_yaml *y, yaml_node_t *n, const char *path,
                         const char *device_id, iotgw_diag *diag)
{
    static const char *const dkeys[] = {"id", "primaryKey", "secondaryKey", "status", "modules", NULL};
    static const char *const mkeys[] = {"id", "primaryKey", "secondaryKey", NULL};
    int rc = iotgw_yaml_check_keys(y, n, path, device_id ? mkeys : dkeys, diag);
    if (rc)
        return rc;
    yaml_node_t *idn = iotgw_yaml_get(y, n, "id");
    if (!idn)
        return iotgw_yaml_fail(y, n, path, diag, "an id is needed");
    const char *id = iotgw_yaml_text(y, idn, path, diag);
    const char *pk = NULL, *sk = NULL, *status = "enabled";
    yaml_node_t *pkn = iotgw_yaml_get(y, n, "primaryKey"), *skn = iotgw_yaml_get(y, n, "secondaryKey");
    yaml_node_t *stn = iotgw_yaml_get(y, n, "status");
    if (!id || (pkn && !(pk = iotgw_yaml_text(y, pkn, path, diag))) ||
        (skn && !(sk = iotgw_yaml_text(y, skn, path, diag))) ||
        (stn && !(status = iotgw_yaml_text(y, stn, path, diag))))
        return IOTGW_ERR_CONFIG;
    if (strcmp(status, "enabled") && strcmp(status, "disabled"))
        return iotgw_yaml_fail(y, stn, path, diag, "status must be enabled or disabled, not \"%s\"", status);
    iotgw_diag d = {0};
    rc = emu_registry_add(r, device_id ? device_id : id, device_id ? id : NULL, pk, sk,
                          !strcmp(status, "enabled"), NULL, &d);
    if (rc)
        return iotgw_yaml_fail(y, idn, path, diag, "%s", d.text);
    yaml_node_t *mods = device_id ? NULL : iotgw_yaml_get(y, n, "modules");
    if (mods) {
        int count = iotgw_yaml_seq_len(y, mods, path, diag);
        if (count < 0)
            return count;
        for (int i = 0; i < count; i++) {
            char sub[160];
            snprintf(sub, sizeof sub, "%s.modules[%d]", path, i);
            if ((rc = load_identity(r, y, iotgw_yaml_seq_item(y, mods, i), sub, id, diag)))
                return rc;
        }
    }
    return 0;
}

static int load_list(emu_registry *r, iotgw_yaml *y, const char *key, iotgw_diag *diag)
{
    yaml_node_t *list = iotgw_yaml_get(y, iotgw_yaml_root(y), key);
    if (!list)
        return 0;
    int count = iotgw_yaml_seq_len(y, list, key, diag);
    if (count < 0)
        return count;
    for (int i = 0; i < count; i++) {
        char path[64];
        snprintf(path, sizeof path, "%s[%d]", key, i);
        yaml_node_t *item = iotgw_yaml_seq_item(y, list, i);
        int rc = !strcmp(key, "policies") ? load_policy(r, y, item, path, diag)
                                          : load_identity(r, y, item, path, NULL, diag);
        if (rc)
            return rc;
    }
    return 0;
}

/* Did any device or module of the file come without both keys (so new ones were made)? */
static int has_missing_keys(iotgw_yaml *y, yaml_node_t *list)
{
    if (!list || list->type != YAML_SEQUENCE_NODE)
        return 0;
    for (int i = 0; i < (int)(list->data.sequence.items.top - list->data.sequence.items.start); i++) {
        yaml_node_t *item = iotgw_yaml_seq_item(y, list, i);
        if (!iotgw_yaml_get(y, item, "primaryKey") || !iotgw_yaml_get(y, item, "secondaryKey") ||
            has_missing_keys(y, iotgw_yaml_get(y, item, "modules")))
            return 1;
    }
    return 0;
}

int emu_registry_load(const char *path, emu_registry **out, iotgw_diag *diag)
{
    *out = NULL;
    if (access(path, F_OK) != 0 && errno == ENOENT) {
        emu_registry *r = emu_registry_new();
        if (!r || !(r->path = strdup(path))) {
            emu_registry_free(r);
            return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
        }
        int rc = emu_registry_save(r, diag);
        if (rc) {
            emu_registry_free(r);
            return rc;
        }
        *out = r;
        return 0;
    }
    iotgw_yaml y;
    int rc = iotgw_yaml_load(&y, path, NULL, diag);
    if (rc)
        return rc;
    emu_registry *r = registry_alloc();
    static const char *const top[] = {"policies", "devices", NULL};
    yaml_node_t *root = iotgw_yaml_root(&y);
    if (!r)
        rc = iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    else if (root && !(root->type == YAML_SCALAR_NODE && !root->data.scalar.length))
        rc = iotgw_yaml_check_keys(&y, root, "", top, diag);
    if (!rc)
        rc = load_list(r, &y, "policies", diag);
    /* Without a policies list the hub gets IoT Hub's default policies, with new keys. */
    int generated = 0;
    if (!rc && !iotgw_yaml_get(&y, root, "policies")) {
        emu_registry *defaults = emu_registry_new();
        if (!defaults) {
            rc = iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
        } else {
            r->policies = defaults->policies;
            r->npolicies = defaults->npolicies;
            defaults->policies = NULL;
            defaults->npolicies = 0;
            emu_registry_free(defaults);
            generated = 1;
        }
    }
    if (!rc)
        rc = load_list(r, &y, "devices", diag);
    if (!rc && !(r->path = strdup(path)))
        rc = iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    generated |= !rc && has_missing_keys(&y, iotgw_yaml_get(&y, root, "devices"));
    iotgw_yaml_free(&y);
    if (!rc && generated)
        rc = emu_registry_save(r, diag);
    if (rc) {
        emu_registry_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

/* ------------------------------------------------------------------ saving */

static void write_keys(FILE *f, const char *indent, const char *pk, const char *sk)
{
    fprintf(f, "%sprimaryKey: ", indent);
    iotgw_yaml_write_quoted(f, pk);
    fprintf(f, "\n%ssecondaryKey: ", indent);
    iotgw_yaml_write_quoted(f, sk);
    fputc('\n', f);
}

static void write_registry(emu_registry *r, FILE *f)
{
    fprintf(f, "# iothub-emulator registry (docs/emulator.md); rewritten when the registry changes\n");
    fprintf(f, "policies:\n");
    for (int i = 0; i < r->npolicies; i++) {
        emu_policy *p = &r->policies[i];
        char rights[128];
        fprintf(f, "  - name: ");
        iotgw_yaml_write_quoted(f, p->name);
        fputc('\n', f);
        write_keys(f, "    ", p->primary_key, p->secondary_key);
        fprintf(f, "    rights: [%s]\n", emu_rights_text(p->rights, rights, sizeof rights));
    }
    fprintf(f, "devices:%s\n", r->nids ? "" : " []");
    for (int i = 0; i < r->nids; i++) {
        emu_identity *d = r->ids[i];
        if (d->module_id)
            continue;
        fprintf(f, "  - id: ");
        iotgw_yaml_write_quoted(f, d->device_id);
        fputc('\n', f);
        write_keys(f, "    ", d->primary_key, d->secondary_key);
        fprintf(f, "    status: %s\n", d->enabled ? "enabled" : "disabled");
        int first = 1;
        for (int j = 0; j < r->nids; j++) {
            emu_identity *m = r->ids[j];
            if (!m->module_id || strcmp(m->device_id, d->device_id))
                continue;
            if (first)
                fprintf(f, "    modules:\n");
            first = 0;
            fprintf(f, "      - id: ");
            iotgw_yaml_write_quoted(f, m->module_id);
            fputc('\n', f);
            write_keys(f, "        ", m->primary_key, m->secondary_key);
        }
    }
}

int emu_registry_save(emu_registry *r, iotgw_diag *diag)
{
    if (!r->path)
        return 0;
    char *tmp;
    if (asprintf(&tmp, "%s.tmp.%d", r->path, (int)getpid()) < 0)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    FILE *f = fopen(tmp, "w");
    if (!f) {
        int e = errno;
        free(tmp);
        return iotgw_diag_fail(diag, IOTGW_ERR_IO, "%s: %s", r->path, strerror(e));
    }
    write_registry(r, f);
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    int e = errno;
    bad |= fclose(f) != 0;
    if (!bad && rename(tmp, r->path) != 0) {
        bad = 1;
        e = errno;
    }
    if (bad) {
        unlink(tmp);
        free(tmp);
        return iotgw_diag_fail(diag, IOTGW_ERR_IO, "%s: cannot write: %s", r->path, strerror(e));
    }
    free(tmp);
    return 0;
}
