/**
 * Moleculer's Prometheus reporter without its own HTTP server unless a port is configured.
 *
 * The stock reporter listens on 3030 on every node, which collides when several nodes share a
 * host. The gateway serves `/metrics` on its own port from `render()`; any other node serves
 * Prometheus text only when METRICS_PORT is set, and there also `/health` and `/ready` (the
 * node's own dependencies, lib/readiness) for probes.
 */
import { MetricReporters } from "moleculer";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { MetricRegistry, ServiceBroker } from "moleculer";
import { nodeReadiness } from "./readiness";
import { flushCallMetrics } from "./call-middlewares";

export class PrometheusReporter extends MetricReporters.Prometheus {
	override init(registry: MetricRegistry): void {
		if (this.opts.port == null) {
			// Skip the stock init (it would listen on 3030); keep what it sets up besides the server.
			(MetricReporters.Base.prototype.init as (r: MetricRegistry) => void).call(this, registry);
			const labels = this.opts.defaultLabels;
			(this as unknown as { defaultLabels: unknown }).defaultLabels =
				typeof labels === "function" ? labels.call(this, registry) : labels;
			return;
		}
		super.init(registry);
	}

	stop(): Promise<void> {
		const self = this as unknown as { server?: unknown };
		if (!self.server) return Promise.resolve();
		return (MetricReporters.Prometheus.prototype as unknown as { stop(): Promise<void> }).stop.call(this);
	}

	handler(req: IncomingMessage, res: ServerResponse): void {
		const send = (status: number, body: unknown) => {
			res.writeHead(status, { "Content-Type": "application/json; charset=utf-8" });
			res.end(JSON.stringify(body));
		};
		if (req.url === "/health") return send(200, { status: "ok" });
		if (req.url === "/ready") {
			const broker = (this as unknown as { broker: ServiceBroker }).broker;
			void nodeReadiness(broker).then(
				({ ok, checks }) => send(ok ? 200 : 503, { checks }),
				(err: Error) => send(503, { error: err.message }),
			);
			return;
		}
		(MetricReporters.Prometheus.prototype as unknown as { handler(q: IncomingMessage, s: ServerResponse): void }).handler.call(this, req, res);
	}

	/** The Prometheus text exposition of this node's metrics (what the stock handler serves too). */
	generatePrometheusResponse(): string {
		// The stock reporter walks the registry's store: the request counts first (lib/call-middlewares).
		flushCallMetrics((this as unknown as { registry: object }).registry);
		return (MetricReporters.Prometheus.prototype as unknown as { generatePrometheusResponse(): string }).generatePrometheusResponse.call(this);
	}

	/** The Prometheus text exposition of this node's metrics. */
	render(): string {
		return this.generatePrometheusResponse();
	}
}
