/* counters: exports a file of counters the operator grants, e.g. written by a cron job:
 *   [capabilities] dirs = [{ guest = "/data", host = "/var/lib/myapp/stats" }]
 *                  env = ["COUNTERS_FILE"]      # optional, default /data/counters
 * Format, one sample per line ('#' starts a comment):
 *   <metric_name> <value> [label=value ...]
 * An integer >= 0 becomes a counter, anything else (negative, decimal) a gauge.
 * Invalid names or labels fail the run (the host validates them).
 */
#include <stdlib.h>
#include "sentra_plugin.h"

#define BUF 65536
static char buf[BUF];
static char path[256];
static char labels[1024];

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r'; }

SENTRA_EXPORT("collect") int collect(void) {
  const char *file = "/data/counters";
  int32_t plen = sentra_env_get("COUNTERS_FILE", 13, path, sizeof path - 1);
  if (plen > 0 && plen < (int32_t)sizeof path) {
    path[plen] = 0;
    file = path;
  }
  int32_t n = sentra_read_file(file, (int32_t)strlen(file), buf, BUF - 1);
  if (n < 0) {
    sentra_logs(SENTRA_ERROR, n == SENTRA_E_DENIED ? "counters file not granted"
                              : n == SENTRA_E_NOT_FOUND ? "counters file not found"
                                                        : "counters file unreadable");
    return 1;
  }
  buf[n] = 0;
  char *line = buf;
  while (line && *line) {
    char *next = strchr(line, '\n');
    if (next) *next++ = 0;
    char *hash = strchr(line, '#');
    if (hash) *hash = 0;
    while (is_space(*line)) line++;
    char *name = line;
    while (*line && !is_space(*line)) line++;
    size_t name_len = (size_t)(line - name);
    if (name_len == 0) { line = next; continue; }
    while (is_space(*line)) line++;
    char *num = line;
    while (*line && !is_space(*line)) line++;
    if (*line) *line++ = 0;
    size_t ll = 0;
    for (;;) { /* remaining tokens are labels, joined with '\n' */
      while (is_space(*line)) line++;
      if (!*line) break;
      char *tok = line;
      while (*line && !is_space(*line)) line++;
      size_t tl = (size_t)(line - tok);
      if (ll + tl + 1 >= sizeof labels) { sentra_logs(SENTRA_ERROR, "labels too long"); return 3; }
      if (ll) labels[ll++] = '\n';
      memcpy(labels + ll, tok, tl);
      ll += tl;
    }
    char *end;
    long long i = strtoll(num, &end, 10);
    if (*num && !*end && i >= 0) {
      sentra_emit_counter(name, (int32_t)name_len, labels, (int32_t)ll, (int64_t)i);
    } else {
      double d = strtod(num, &end);
      if (!*num || *end) { sentra_logs(SENTRA_ERROR, "value is not a number"); return 2; }
      sentra_emit_gauge(name, (int32_t)name_len, labels, (int32_t)ll, d);
    }
    line = next;
  }
  return 0;
}
