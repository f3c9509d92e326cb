"""``icc simulator``: one local server speaking the Aliyun, Tencent and WeChat HTTP APIs and
a generic SMS gateway, plus an SMTP server, with configurable latency, error rate and
delivery-report callbacks back to the platform. For tests, the demo and benchmarks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from channels.simulator.aliyun import AliyunSmsSimulator
from channels.simulator.sms_gateway import SmsGatewaySimulator
from channels.simulator.smtp import SmtpSimulator
from channels.simulator.tencent import TencentSmsSimulator
from channels.simulator.wechat import DEFAULT_APPS, WeChatSimulator


@dataclass(frozen=True)
class SimulatorOptions:
    host: str = "127.0.0.1"
    port: int = 9100
    smtp_port: int = 2525
    latency: float = 0.0
    error_rate: float = 0.0
    callback_base: str | None = None  # e.g. http://127.0.0.1:8000/v1/callbacks
    callback_token: str = "simulator-callback-token"
    callback_delay: float = 0.5


class Simulator:
    """All simulated providers behind one HTTP port and one SMTP port."""

    def __init__(self, options: SimulatorOptions) -> None:
        self.options = options
        o = options

        def callback(account: str) -> str | None:
            if not o.callback_base:
                return None
            return f"{o.callback_base.rstrip('/')}/{account}?token={o.callback_token}"

        self.aliyun = AliyunSmsSimulator(
            callback_url=callback("aliyun-sim"),
            callback_delay=o.callback_delay,
            latency=o.latency,
            error_rate=o.error_rate,
        )
        self.tencent = TencentSmsSimulator(
            callback_url=callback("tencent-sim"),
            callback_delay=o.callback_delay,
            latency=o.latency,
            error_rate=o.error_rate,
        )
        self.gateway = SmsGatewaySimulator(latency=o.latency, error_rate=o.error_rate)
        self.wechat = WeChatSimulator(
            callback_url=f"{o.callback_base.rstrip('/')}/wechat-sim" if o.callback_base else None,
            callback_token=o.callback_token,
            callback_delay=o.callback_delay,
            latency=o.latency,
            error_rate=o.error_rate,
        )
        self.smtp = SmtpSimulator(host=o.host, port=o.smtp_port, latency=o.latency)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def app(self) -> web.Application:
        app = web.Application()
        self.aliyun.add_routes(app, prefix="/aliyun")
        self.tencent.add_routes(app, prefix="/tencent")
        self.gateway.add_routes(app, prefix="/gateway")
        self.wechat.add_routes(app, prefix="/wechat")
        return app

    async def start(self) -> str:
        # No access log: WeChat and Aliyun carry secrets and phone numbers in query strings.
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.options.host, self.options.port).start()
        host, port = self._runner.addresses[0][:2]  # the port chosen when 0 was asked
        self.base_url = f"http://{host}:{port}"
        self.smtp.start()
        return self.base_url

    async def stop(self) -> None:
        self.smtp.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def providers_toml(self) -> str:
        """A providers file (ICC_PROVIDERS_FILE) pointing the platform at this simulator."""
        base, token = self.base_url, self.options.callback_token
        app_id, secret = next(iter(DEFAULT_APPS.items()))
        return f"""# Provider accounts of icc simulator; use as ICC_PROVIDERS_FILE

[[providers]]
name = "aliyun-sim"
type = "aliyun_sms"
channel = "sms"
priority = 1
weight = 50
cost = "0.045"
endpoint = "{base}/aliyun"
[providers.settings]
access_key_id = "test-access-key-id"
access_key_secret = "test-access-key-secret"
sign_name = "示例银行"
callback_token = "{token}"

[[providers]]
name = "tencent-sim"
type = "tencent_sms"
channel = "sms"
priority = 1
weight = 50
cost = "0.040"
endpoint = "{base}/tencent"
[providers.settings]
secret_id = "test-secret-id"
secret_key = "test-secret-key"
sms_sdk_app_id = "1400000000"
sign_name = "示例银行"
callback_token = "{token}"

[[providers]]
name = "gateway-sim"
type = "http_sms"
channel = "sms"
priority = 2
cost = "0.030"
[providers.settings]
url = "{base}/gateway/sms"
success_field = "code"
success_value = "0"
message_id_field = "data.msgid"

[[providers]]
name = "wechat-sim"
type = "wechat_template"
channel = "wechat"
cost = "0.000"
endpoint = "{base}/wechat"
[providers.settings]
app_id = "{app_id}"
app_secret = "{secret}"
callback_token = "{token}"

[[providers]]
name = "smtp-sim"
type = "smtp"
channel = "email"
cost = "0.001"
[providers.settings]
host = "{self.options.host}"
port = {self.smtp.port}
security = "none"
from_address = "noreply@bank.example"
from_name = "示例银行"
"""


async def serve(options: SimulatorOptions, *, providers_file: Path | None = None) -> None:
    simulator = Simulator(options)
    url = await simulator.start()
    if providers_file is not None:
        providers_file.write_text(simulator.providers_toml(), encoding="utf-8")
    print(
        f"simulator: HTTP {url} (/aliyun, /tencent, /gateway, /wechat); "
        f"SMTP {options.host}:{simulator.smtp.port}",
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await simulator.stop()
