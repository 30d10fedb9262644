#include "codecs/yaml_doc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int iotgw_yaml_load(iotgw_yaml *y, const char *file, const char *text, iotgw_diag *diag)
{
    memset(y, 0, sizeof *y);
    y->file = strdup(file ? file : "(text)");
    if (!y->file)
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    FILE *f = NULL;
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        iotgw_yaml_free(y);
        return iotgw_diag_fail(diag, IOTGW_ERR_NOMEM, "out of memory");
    }
    if (text) {
        yaml_parser_set_input_string(&parser, (const unsigned char *)text, strlen(text));
    } else {
        f = fopen(file, "rb");
        if (!f) {
            int e = errno;
            yaml_parser_delete(&parser);
            iotgw_yaml_free(y);
            return iotgw_diag_fail(diag, IOTGW_ERR_IO, "%s: %s", file, strerror(e));
        }
        yaml_parser_set_input_file(&parser, f);
    }
    int ok = yaml_parser_load(&parser, &y->doc);
    int rc = 0;
    if (!ok) {
        rc = iotgw_diag_fail(diag, IOTGW_ERR_CONFIG, "%s:%zu: %s%s%s", y->file, parser.problem_mark.line + 1,
                             parser.problem ? parser.problem : "syntax error", parser.context ? " " : "",
                             parser.context ? parser.context : "");
    } else {
        y->loaded = 1;
    }
    yaml_parser_delete(&parser);
    if (f)
        fclose(f);
    if (rc)
        iotgw_yaml_free(y);
    return rc;
}

void iotgw_yaml_free(iotgw_yaml *y)
{
    if (y->loaded)
        yaml_document_delete(&y->doc);
    free(y->file);
    memset(y, 0, sizeof *y);
}

yaml_node_t *iotgw_yaml_root(iotgw_yaml *y)
{
    return yaml_document_get_root_node(&y->doc);
}

int iotgw_yaml_fail(iotgw_yaml *y, const yaml_node_t *node, const char *path, iotgw_diag *diag,
                    const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t line = node ? node->start_mark.line + 1 : 1;
    return iotgw_diag_fail(diag, IOTGW_ERR_CONFIG, "%s:%zu: %s%s%s", y->file, line, path ? path : "",
                           path && *path ? ": " : "", msg);
}

static const char *scalar(yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

int iotgw_yaml_check_keys(iotgw_yaml *y, yaml_node_t *map, const char *path, const char *const *allowed,
                          iotgw_diag *diag)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return iotgw_yaml_fail(y, map, path, diag, "expected a mapping of keys to values");
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&y->doc, p->key);
        const char *name = scalar(k);
        if (!name)
            return iotgw_yaml_fail(y, k, path, diag, "keys must be plain text");
        int known = 0;
        for (const char *const *a = allowed; *a && !known; a++)
            known = !strcmp(*a, name);
        if (!known) {
            char list[256] = "";
            for (const char *const *a = allowed; *a; a++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", a == allowed ? "" : ", ",
                         *a);
            return iotgw_yaml_fail(y, k, path, diag, "unknown key \"%s\" (known: %s)", name, list);
        }
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
            const char *other = scalar(yaml_document_get_node(&y->doc, q->key));
            if (other && !strcmp(other, name))
                return iotgw_yaml_fail(y, k, path, diag, "key \"%s\" given twice", name);
        }
    }
    return 0;
}

yaml_node_t *iotgw_yaml_get(iotgw_yaml *y, yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        const char *name = scalar(yaml_document_get_node(&y->doc, p->key));
        if (name && !strcmp(name, key))
            return yaml_document_get_node(&y->doc, p->value);
    }
    return NULL;
}

const char *iotgw_yaml_text(iotgw_yaml *y, yaml_node_t *node, const char *path, iotgw_diag *diag)
{
    const char *s = scalar(node);
    if (!s)
        iotgw_yaml_fail(y, node, path, diag, "expected a single value");
    return s;
}

int iotgw_yaml_int(iotgw_yaml *y, yaml_node_t *node, const char *path, int64_t min, int64_t max, int64_t *out,
                   iotgw_diag *diag)
{
    const char *s = iotgw_yaml_text(y, node, path, diag);
    if (!s)
        return IOTGW_ERR_CONFIG;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno)
        return iotgw_yaml_fail(y, node, path, diag, "expected a whole number, got \"%s\"", s);
    if (v < min || v > max)
        return iotgw_yaml_fail(y, node, path, diag, "%lld is out of range %" PRId64 "..%" PRId64, v, min,
                               max);
    *out = v;
    return 0;
}

int iotgw_yaml_bool(iotgw_yaml *y, yaml_node_t *node, const char *path, int *out, iotgw_diag *diag)
{
    const char *s = iotgw_yaml_text(y, node, path, diag);
    if (!s)
        return IOTGW_ERR_CONFIG;
    if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on"))
        *out = 1;
    else if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off"))
        *out = 0;
    else
        return iotgw_yaml_fail(y, node, path, diag, "expected true or false, got \"%s\"", s);
    return 0;
}

int iotgw_yaml_seq_len(iotgw_yaml *y, yaml_node_t *node, const char *path, iotgw_diag *diag)
{
    if (!node || node->type != YAML_SEQUENCE_NODE)
        return iotgw_yaml_fail(y, node, path, diag, "expected a list");
    return (int)(node->data.sequence.items.top - node->data.sequence.items.start);
}

yaml_node_t *iotgw_yaml_seq_item(iotgw_yaml *y, yaml_node_t *seq, int i)
{
    return yaml_document_get_node(&y->doc, seq->data.sequence.items.start[i]);
}

void iotgw_yaml_write_quoted(FILE *f, const char *text)
{
    fputc('\'', f);
    for (const char *p = text; *p; p++) {
        if (*p == '\'')
            fputc('\'', f);
        fputc(*p, f);
    }
    fputc('\'', f);
}
