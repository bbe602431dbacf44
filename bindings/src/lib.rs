//! UniFFI facade over doorstep-core; filled by the mobile-bindings issue.
