;; A well-behaved plugin: one gauge and one counter with labels, and a log line.
;; Build: any wat2wasm; the sentra-plugin tests compile it with the `wat` crate.
(module
  (import "sentra_v1" "emit_gauge" (func $gauge (param i32 i32 i32 i32 f64)))
  (import "sentra_v1" "emit_counter" (func $counter (param i32 i32 i32 i32 i64)))
  (import "sentra_v1" "log" (func $log (param i32 i32 i32)))
  (import "sentra_v1" "now_ms" (func $now (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "plugin_up")                 ;; 0..9
  (data (i32.const 16) "plugin_runs_total")        ;; 16..33
  (data (i32.const 48) "source=wat\nkind=example") ;; 48..71
  (data (i32.const 96) "collected")                ;; 96..105
  (func (export "collect") (result i32)
    (call $gauge (i32.const 0) (i32.const 9) (i32.const 48) (i32.const 23) (f64.const 1))
    (call $counter (i32.const 16) (i32.const 17) (i32.const 0) (i32.const 0)
      (i64.div_u (call $now) (i64.const 1000)))
    (call $log (i32.const 2) (i32.const 96) (i32.const 9))
    (i32.const 0)))
