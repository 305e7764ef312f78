"""ma-top, the on-call dashboard (Textual). Its data layer imports no Textual."""
