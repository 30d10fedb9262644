/*
 * settings: the table of iotgw.yaml's scalar settings, each with its name, type, bounds,
 * default and whether a reload applies it. config.c reads every one of them through
 * the table, reload keeps the running value of those a reload does not apply (and says
 * so), --check-config names those that differ from their defaults, and a test checks
 * docs/configuration.md against the table. The settings with structure (listen
 * addresses, TLS files, secrets, the fleet, methods) are config.c's own.
 *
 * Ownership: the table is static. Threading: reentrant. Errors: config.c's.
 */
#ifndef IOTGW_GATEWAY_SETTINGS_H
#define IOTGW_GATEWAY_SETTINGS_H

#include <stddef.h>
#include <stdint.h>

#include "gateway/config.h"

typedef enum iotgw_setting_type {
    IOTGW_SETTING_UINT = 1, /* unsigned, in [min, max] */
    IOTGW_SETTING_INT,      /* int, in [min, max] */
    IOTGW_SETTING_UINT64,   /* uint64_t, in [min, max] */
    IOTGW_SETTING_RATE,     /* double, written as a whole number in [min, max] */
    IOTGW_SETTING_BOOL,     /* int 0 or 1 */
    IOTGW_SETTING_CHOICE,   /* int-sized enum: one of words[], stored as values[] */
    IOTGW_SETTING_TEXT,     /* char *, owned by the configuration */
    IOTGW_SETTING_PATH,     /* char *: a readable file, relative to the configuration's folder */
} iotgw_setting_type;

typedef struct iotgw_setting {
    const char *name; /* "hub.tokenLifetimeSeconds"; a root setting has no dot */
    iotgw_setting_type type;
    size_t offset; /* of the value in iotgw_config */
    int64_t min, max;
    int64_t def;              /* numbers, bools, a choice's value; texts default to none */
    const char *const *words; /* CHOICE: the words, NULL-terminated */
    const int *values;        /* CHOICE: the value of each word */
    int reload;               /* 1: a reload applies it; 0: the running value stays until restart */
} iotgw_setting;

extern const iotgw_setting iotgw_settings[];
extern const size_t iotgw_settings_count;

/* The settings of a section ("hub", "devices", "" for the root), one by one: start with
 * *i = 0; NULL at the end. */
const iotgw_setting *iotgw_settings_next(const char *section, size_t *i);
/* The key within its section ("tokenLifetimeSeconds"). */
const char *iotgw_setting_key(const iotgw_setting *s);
/* Every setting at its default. */
void iotgw_settings_defaults(iotgw_config *c);
/* The value as it would be written in the file ("3600", "amqps", "true", a text; "" for
 * no text), into out. */
void iotgw_setting_format(const iotgw_setting *s, const iotgw_config *c, char *out, size_t size);
int iotgw_setting_is_default(const iotgw_setting *s, const iotgw_config *c);
int iotgw_setting_equal(const iotgw_setting *s, const iotgw_config *a, const iotgw_config *b);
/* A reload: each setting a reload does not apply takes its running value from running
 * (texts are moved, not copied); changed(s) is called first for each that differed. */
void iotgw_settings_keep_running(iotgw_config *next, iotgw_config *running,
                                 void (*changed)(const iotgw_setting *s, void *ctx), void *ctx);

#endif
