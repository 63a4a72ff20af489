"""Control plane adapters: WHIP, WHEP, auth and error mapping."""
