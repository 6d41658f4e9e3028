;; Hostile: infinite loop in collect.
(module
  (memory (export "memory") 1)
  (func (export "collect") (result i32)
    (loop $l (br $l))
    (i32.const 0)))
