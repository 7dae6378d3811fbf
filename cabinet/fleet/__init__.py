"""Fleet sync: the cabinet's side (outbox, agent) and the wire contract both sides import."""
