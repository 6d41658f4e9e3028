/* netsnmp: parses /proc/net/snmp (granted read-only as a directory, e.g.
 *   [capabilities] dirs = [{ guest = "/proc/net", host = "/proc/net" }])
 * and emits one sample per field, named like node_exporter's netstat collector:
 *   node_netstat_<Proto>_<Field>   e.g. node_netstat_Tcp_ActiveOpens
 * Fields that are levels or settings (CurrEstab, Forwarding, DefaultTTL, Rto*, MaxConn)
 * are gauges; all other fields are counters. The file has pairs of lines:
 *   "Tcp: RtoAlgorithm RtoMin ..." / "Tcp: 1 200 ...".
 * The path can be overridden with the granted env var NETSNMP_PATH.
 */
#include <stdlib.h>
#include "sentra_plugin.h"

#define BUF 65536
static char buf[BUF];
static char name[256];
static char path[256];

static int is_gauge(const char *f, size_t n) {
  static const char *g[] = {"CurrEstab", "Forwarding", "DefaultTTL", "RtoAlgorithm",
                            "RtoMin", "RtoMax", "MaxConn", 0};
  for (int i = 0; g[i]; i++)
    if (strlen(g[i]) == n && memcmp(g[i], f, n) == 0) return 1;
  return 0;
}

/* Next whitespace-separated token in [*p, end); returns its length, 0 at end of line. */
static size_t token(const char **p, const char *end, const char **tok) {
  while (*p < end && (**p == ' ' || **p == '\t')) (*p)++;
  *tok = *p;
  while (*p < end && **p != ' ' && **p != '\t' && **p != '\n') (*p)++;
  return (size_t)(*p - *tok);
}

static const char *line_end(const char *p, const char *end) {
  while (p < end && *p != '\n') p++;
  return p;
}

SENTRA_EXPORT("collect") int collect(void) {
  const char *file = "/proc/net/snmp";
  int32_t plen = sentra_env_get("NETSNMP_PATH", 12, path, sizeof path - 1);
  if (plen > 0 && plen < (int32_t)sizeof path) {
    path[plen] = 0;
    file = path;
  }
  int32_t n = sentra_read_file(file, (int32_t)strlen(file), buf, BUF);
  if (n < 0) {
    sentra_logs(SENTRA_ERROR, n == SENTRA_E_DENIED ? "snmp file not granted"
                              : n == SENTRA_E_NOT_FOUND ? "snmp file not found"
                                                        : "snmp file unreadable");
    return 1;
  }
  const char *p = buf, *end = buf + n;
  int emitted = 0;
  while (p < end) {
    const char *h = p, *he = line_end(p, end);
    if (he >= end) break;
    const char *v = he + 1, *ve = line_end(v, end);
    /* header and value lines share the "Proto:" prefix */
    const char *hc = memchr(h, ':', (size_t)(he - h));
    const char *vc = memchr(v, ':', (size_t)(ve - v));
    if (!hc || !vc || hc - h != vc - v || memcmp(h, v, (size_t)(hc - h)) != 0) {
      p = v; /* resynchronise */
      continue;
    }
    size_t proto = (size_t)(hc - h);
    const char *hp = hc + 1, *vp = vc + 1, *ft, *vt;
    size_t fl, vl;
    while ((fl = token(&hp, he, &ft)) && (vl = token(&vp, ve, &vt))) {
      size_t len = 13 + proto + 1 + fl;
      if (len >= sizeof name) continue;
      memcpy(name, "node_netstat_", 13);
      memcpy(name + 13, h, proto);
      name[13 + proto] = '_';
      memcpy(name + 14 + proto, ft, fl);
      char num[32];
      if (vl >= sizeof num) continue;
      memcpy(num, vt, vl);
      num[vl] = 0;
      char *stop;
      long long x = strtoll(num, &stop, 10);
      if (*stop) continue;
      if (x < 0 || is_gauge(ft, fl))
        sentra_emit_gauge(name, (int32_t)len, "", 0, (double)x);
      else
        sentra_emit_counter(name, (int32_t)len, "", 0, (int64_t)x);
      emitted++;
    }
    p = ve < end ? ve + 1 : end;
  }
  if (emitted == 0) {
    sentra_logs(SENTRA_WARN, "no fields parsed");
    return 2;
  }
  return 0;
}
