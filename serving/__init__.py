"""qwen-serve: a production serving kit for the Qwen3.6 family.

Public façade: settings are loaded with :func:`serving.config.load_settings`; launch plans come
from :func:`serving.engines.plan_instance`; the Ray Serve application is built by
:func:`serving.app.build_app`.
"""

__version__ = "0.1.0"
