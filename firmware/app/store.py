# The application's view of the flash records (thresholds, boot counter).
#
# The record format and its atomic write live once, in /record.py beside main.py: the slot
# picker reads /slots.json with the same code before any application slot is imported, so the
# format cannot live inside a slot. This module only re-exports it under the name the
# application has always used.

from record import CorruptRecord, exists, makedirs, read, write  # noqa: F401
