"""What the operator commands do: emit, replay, status, inspect, try, the demo and chaos stories."""
