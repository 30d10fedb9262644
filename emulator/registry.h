/*
 * The emulator's identity registry: shared access policies and devices (with their
 * modules), loaded from and written back to a YAML file (docs/emulator.md).
 *
 *   policies:
 *     - name: iothubowner
 *       primaryKey: <base64>
 *       secondaryKey: <base64>
 *       rights: [RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect]
 *   devices:
 *     - id: dev1
 *       primaryKey: <base64>        # made up when absent
 *       secondaryKey: <base64>
 *       status: enabled              # or disabled
 *       modules:
 *         - id: mod1
 *           primaryKey: <base64>
 *
 * Each device and module is an emu_identity, found by id in O(1); it also carries the
 * identity's twin, which is not saved. What the hub knows of an identity while it runs
 * (its connections, queues and counters) is the hub's own (emulator/hub.h).
 *
 * Ownership: the registry owns its policies and identities until emu_registry_free.
 * Threading: event-loop thread only. Errors: IOTGW_ERR_CONFIG (file, line and key in
 * the diag), IOTGW_ERR_IO, IOTGW_ERR_INVALID_ARG.
 */
#ifndef IOTGW_EMULATOR_REGISTRY_H
#define IOTGW_EMULATOR_REGISTRY_H

#include <stdint.h>
#include <jansson.h>

#include "codecs/error.h"

enum {
    EMU_RIGHT_REGISTRY_READ = 1,
    EMU_RIGHT_REGISTRY_WRITE = 2,
    EMU_RIGHT_SERVICE_CONNECT = 4,
    EMU_RIGHT_DEVICE_CONNECT = 8,
};

typedef struct emu_policy {
    char *name;
    char *primary_key, *secondary_key;
    unsigned rights;
} emu_policy;

typedef struct emu_identity {
    char *id;        /* "dev" or "dev/mod" */
    char *device_id; /* the device part */
    char *module_id; /* NULL for a device */
    char *primary_key, *secondary_key;
    int enabled;
    char generation_id[32];
    /* twin: desired and reported property objects (each with no $version/$metadata) */
    json_t *tags, *desired, *reported;
    int64_t desired_version, reported_version, tags_version;
    int64_t registry_version; /* grows with each change through the registry API: the device's etag */
    struct emu_identity *hash_next;
} emu_identity;

typedef struct emu_registry emu_registry;

/* A registry with IoT Hub's default policies (iothubowner, service, device, registryRead,
 * registryReadWrite) with fresh random keys, and no devices. */
emu_registry *emu_registry_new(void);
/* Load a file; a missing file gives the default registry, which is then saved there.
 * Later changes are saved to the same path. */
int emu_registry_load(const char *path, emu_registry **out, iotgw_diag *diag);
/* Write the registry to its file atomically (temporary file, fsync, rename); nothing
 * when it has no file. */
int emu_registry_save(emu_registry *r, iotgw_diag *diag);
void emu_registry_free(emu_registry *r);

emu_policy *emu_registry_policy(emu_registry *r, const char *name);
int emu_registry_policy_count(const emu_registry *r);
emu_policy *emu_registry_policy_at(emu_registry *r, int i);
/* A device (module_id NULL) or a module, or NULL. */
emu_identity *emu_registry_find(emu_registry *r, const char *device_id, const char *module_id);
/* Add a device or module; NULL keys are made up. Fails when it exists or an id is bad. */
int emu_registry_add(emu_registry *r, const char *device_id, const char *module_id, const char *primary_key,
                     const char *secondary_key, int enabled, emu_identity **out, iotgw_diag *diag);
/* Remove an identity and free it (a running hub lets go of it first:
 * emu_hub_identity_forget). */
void emu_registry_remove(emu_registry *r, emu_identity *id);
/* Every identity, in the order they were added. */
int emu_registry_count(const emu_registry *r);
emu_identity *emu_registry_at(emu_registry *r, int i);

/* A fresh random 256-bit key, base64 (malloc'd). */
char *emu_random_key(void);
const char *emu_rights_text(unsigned rights, char *buf, size_t len);

#endif
