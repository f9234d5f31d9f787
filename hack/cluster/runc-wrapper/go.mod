module ctrace.local/runc-wrapper

go 1.19
