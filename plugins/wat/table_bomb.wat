;; Hostile: grow a funcref table by 10 million elements.
(module
  (memory (export "memory") 1)
  (table $t 1 funcref)
  (func (export "collect") (result i32)
    (drop (table.grow $t (ref.null func) (i32.const 10000000)))
    (i32.const 0)))
