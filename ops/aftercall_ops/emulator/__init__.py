"""The local emulator of the stack: template.yaml run on loopback (moto, processes, HTTP servers)."""
