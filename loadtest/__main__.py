from loadtest.cli import app

app()
