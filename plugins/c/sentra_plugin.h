/* Sentra plugin ABI v1 for C (clang --target=wasm32-wasi, wasi-libc for string functions).
 *
 * A plugin exports `memory` and `int collect(void)` (0 = success) and may import only the
 * functions below from module "sentra_v1". The host creates a fresh instance for every run,
 * calls `_initialize` if exported (wasi-libc reactor), then `collect`. WASI functions are
 * NOT provided: do not call printf/fopen; use sentra_read_file / sentra_log.
 *
 * Labels are "name=value" lines separated by '\n' (may be empty).
 */
#ifndef SENTRA_PLUGIN_H
#define SENTRA_PLUGIN_H

#include <stdint.h>
#include <string.h>

#define SENTRA_IMPORT(name) __attribute__((import_module("sentra_v1"), import_name(name)))
#define SENTRA_EXPORT(name) __attribute__((export_name(name)))

/* Status codes returned by read_file / env_get. */
#define SENTRA_E_DENIED (-1)    /* not granted, or escapes a granted directory */
#define SENTRA_E_NOT_FOUND (-2) /* granted but absent */
#define SENTRA_E_IO (-3)        /* not a regular file, or read error */

enum sentra_level { SENTRA_ERROR = 0, SENTRA_WARN = 1, SENTRA_INFO = 2, SENTRA_DEBUG = 3 };

SENTRA_IMPORT("emit_gauge")
void sentra_emit_gauge(const char *name, int32_t name_len, const char *labels,
                       int32_t labels_len, double value);
SENTRA_IMPORT("emit_counter")
void sentra_emit_counter(const char *name, int32_t name_len, const char *labels,
                         int32_t labels_len, int64_t value);
SENTRA_IMPORT("log") void sentra_log(int32_t level, const char *msg, int32_t len);
/* Reads at most `cap` bytes of a granted file; returns the bytes read or a status < 0. */
SENTRA_IMPORT("read_file")
int32_t sentra_read_file(const char *path, int32_t path_len, char *buf, int32_t cap);
/* Copies at most `cap` bytes of a granted variable; returns its full length or a status. */
SENTRA_IMPORT("env_get")
int32_t sentra_env_get(const char *name, int32_t name_len, char *buf, int32_t cap);
SENTRA_IMPORT("now_ms") int64_t sentra_now_ms(void);

static inline void sentra_logs(int32_t level, const char *msg) {
  sentra_log(level, msg, (int32_t)strlen(msg));
}

#endif
