;; Hostile: passes a 100 MB metric name / a length far past linear memory.
(module
  (import "sentra_v1" "emit_gauge" (func $gauge (param i32 i32 i32 i32 f64)))
  (memory (export "memory") 1)
  (func (export "collect") (result i32)
    (call $gauge (i32.const 0) (i32.const 100000000) (i32.const 0) (i32.const 0) (f64.const 1))
    (i32.const 0)))
