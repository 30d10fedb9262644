/*
 * Reading configuration files written in YAML (libyaml's document model), with errors
 * that name the file, the line and the key, e.g.
 *
 *   registry.yaml:12: devices[3].status: expected "enabled" or "disabled", got "on"
 *
 * A document is loaded whole (config files are small); nodes are then looked up by key.
 * libyaml resolves an alias to the node it names (shared, not copied), and readers here
 * only walk the keys they know, so a file full of aliases cannot make them expand.
 *
 * Ownership: iotgw_yaml_load fills a document owned by the caller until
 * iotgw_yaml_free. Node pointers are valid as long as the document.
 * Threading: reentrant on distinct documents. Errors: IOTGW_ERR_CONFIG with the message
 * in the diag.
 */
#ifndef IOTGW_CODECS_YAML_DOC_H
#define IOTGW_CODECS_YAML_DOC_H

#include <stdint.h>
#include <stdio.h>
#include <yaml.h>

#include "codecs/error.h"

typedef struct iotgw_yaml {
    yaml_document_t doc;
    char *file; /* for messages */
    int loaded;
} iotgw_yaml;

/* Load a file (text may be NULL) or a string (file names it in messages). An empty
 * document is an empty mapping. */
int iotgw_yaml_load(iotgw_yaml *y, const char *file, const char *text, iotgw_diag *diag);
void iotgw_yaml_free(iotgw_yaml *y);
yaml_node_t *iotgw_yaml_root(iotgw_yaml *y);

/* Fail with "file:line: path: message" at node's line. */
int iotgw_yaml_fail(iotgw_yaml *y, const yaml_node_t *node, const char *path, iotgw_diag *diag,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Check that map is a mapping whose keys are all in the NULL-terminated list. */
int iotgw_yaml_check_keys(iotgw_yaml *y, yaml_node_t *map, const char *path, const char *const *allowed,
                          iotgw_diag *diag);
/* The value under key in a mapping, or NULL. */
yaml_node_t *iotgw_yaml_get(iotgw_yaml *y, yaml_node_t *map, const char *key);
/* Scalar text of a node (NULL and a failure when it is not a scalar). */
const char *iotgw_yaml_text(iotgw_yaml *y, yaml_node_t *node, const char *path, iotgw_diag *diag);
int iotgw_yaml_int(iotgw_yaml *y, yaml_node_t *node, const char *path, int64_t min, int64_t max, int64_t *out,
                   iotgw_diag *diag);
int iotgw_yaml_bool(iotgw_yaml *y, yaml_node_t *node, const char *path, int *out, iotgw_diag *diag);
/* Number of items of a sequence (failure when node is not one); item i. */
int iotgw_yaml_seq_len(iotgw_yaml *y, yaml_node_t *node, const char *path, iotgw_diag *diag);
yaml_node_t *iotgw_yaml_seq_item(iotgw_yaml *y, yaml_node_t *seq, int i);

/* Write text as a YAML single-quoted scalar. */
void iotgw_yaml_write_quoted(FILE *f, const char *text);

#endif
