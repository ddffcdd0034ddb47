"""Pure decisions, no I/O: is it valid, whose visit is it, is it a duplicate, what row, what reply, may it be served."""
