;; Hostile: infinite loop in the start function (runs during instantiation).
(module
  (memory (export "memory") 1)
  (func $start (loop $l (br $l)))
  (start $start)
  (func (export "collect") (result i32) (i32.const 0)))
