"""An SMS gateway sandbox: accepts sends over HTTP and reports delivery, as an operator would."""
