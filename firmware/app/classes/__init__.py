# One module per device class (fire, flood, water, air). Each exposes a class with the same
# interface, loaded by name by app.node:
#
#   cls(hal, bank)        hal: the board HAL, bank: app.regbank.RegBank of that class
#   .sample(now_ms)       read, filter, evaluate; writes the class input registers; never raises
#   .reset()              operator reset: clears latched alarms, re-arms every alarm
#   .alarm_bits           int, bits from regbank.class_map(name)["alarm_bits"]
#   .fault_bits           int, bits from regbank.class_map(name)["fault_bits"]
#   .latched              True while a latched alarm waits for reset (fire only)
#   .errors               running count of failed sensor reads
