"""The operator's console: a Starlette app the controller's web server mounts (docs/console.md).

`console_app(ConsoleDeps(...))` from cabinet.console.app; operators are made with
`cabinet operators add NAME`."""
