/**
 * moleculer-runner overwrites broker options from environment variables named after their path
 * (TRACING → tracing, TRACING_EXPORTER → tracing.exporter…) after loading moleculer.config.ts.
 * The variables of lib/config that share such a name must reach the broker as lib/config read
 * them, not as the runner would rewrite them.
 */
import path from "node:path";
import { ServiceBroker } from "moleculer";

// The runner's own rewrite (moleculer/src/runner.js), applied to the config as the runner does.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const Runner = require(path.join(path.dirname(require.resolve("moleculer")), "src/runner.js")) as new () => { overwriteFromEnv(config: object): Record<string, unknown> };

function configAsTheRunnerSeesIt(env: Record<string, string>): Record<string, unknown> {
	const saved = { ...process.env };
	Object.assign(process.env, env);
	try {
		let config: Record<string, unknown> = {};
		jest.isolateModules(() => {
			// eslint-disable-next-line @typescript-eslint/no-require-imports
			config = { ...(require("../../moleculer.config") as Record<string, unknown>) };
		});
		return new Runner().overwriteFromEnv(config);
	} finally {
		for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
		Object.assign(process.env, saved);
	}
}

describe("moleculer.config under moleculer-runner", () => {
	it("keeps TRACING=off off: no span for any call", async () => {
		const config = configAsTheRunnerSeesIt({ TRACING: "off" });
		expect(config.tracing).toEqual({ enabled: false });
		const broker = new ServiceBroker({ ...config, logger: false, transporter: null, cacher: null, metrics: { enabled: false }, started: undefined } as never);
		broker.createService({ name: "s", actions: { a: ctx => ({ span: !!(ctx as unknown as { span?: unknown }).span }) } });
		await broker.start();
		try {
			expect(broker.isTracingEnabled()).toBe(false);
			expect(await broker.call("s.a")).toEqual({ span: false });
		} finally {
			await broker.stop();
		}
	});

	it("keeps the trace collector's exporter when TRACING_EXPORTER names another", () => {
		const tracing = configAsTheRunnerSeesIt({ TRACING_EXPORTER: "zipkin", TRACING_ZIPKIN_URL: "http://zipkin.test:9411" }).tracing as { exporter: Array<{ type: string; options: { baseURL?: string } }> };
		expect(tracing.exporter.map(e => e.type)).toEqual(["Event", "Zipkin"]);
		expect(tracing.exporter[1].options.baseURL).toBe("http://zipkin.test:9411");
	});
});
