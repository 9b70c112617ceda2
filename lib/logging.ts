/**
 * Logs: JSON lines through pino (LOG_FORMAT=json, the default with NODE_ENV=production) or
 * Moleculer's console lines (LOG_FORMAT=pretty, the default otherwise), both through Moleculer's
 * logger, so every `this.logger` of every service writes them.
 *
 * Every line written while a request is handled carries its `requestID`: a middleware runs each
 * action, event and channel handler inside the request scope (lib/request-scope) of the Context's
 * requestID, and the formatter reads it from there. Nothing is logged per request by this module.
 *
 * Secrets: fields named like passwords, tokens, secrets or Authorization headers are replaced by
 * "[redacted]" in JSON lines; URLs with credentials go through maskUrl (lib/config) at the caller.
 */
import type { BrokerOptions, Context, Middleware } from "moleculer";
import type { Config } from "./config";
import { requestScope as scope } from "./request-scope";

/** The requestID of the request being handled here, if any. */
export function currentRequestId(): string | undefined {
	return scope.getStore();
}

type Handler = (ctx: Context, ...rest: unknown[]) => Promise<unknown>;
interface Logger {
	debug(...args: unknown[]): void;
}

const withRequestId = (handler: Handler) =>
	function requestScoped(ctx: Context, ...rest: unknown[]) {
		const id = ctx?.requestID;
		// A local call inside the same request (api.rest → products.get) is in its scope already.
		if (!id || scope.getStore() === id) return handler(ctx, ...rest);
		return scope.run(id, handler, ctx, ...rest);
	};

/** At debug: a line when each handler starts and ends (inside the scope, so with the requestID). */
const withDebugLines = (handler: Handler, what: string, logger: Logger) =>
	async function logged(ctx: Context, ...rest: unknown[]) {
		logger.debug(`${what} started`);
		const started = process.hrtime.bigint();
		try {
			return await handler(ctx, ...rest);
		} finally {
			logger.debug(`${what} finished in ${(Number(process.hrtime.bigint() - started) / 1e6).toFixed(1)} ms`);
		}
	};

/**
 * Runs every handler of this node in the scope of its Context's requestID. At `debug` (decided
 * when the handlers are wrapped: nothing is checked per call) each handler also logs its start
 * and end, so a request leaves a line in every service it crosses.
 */
/** True when LOG_LEVEL lets `debug` lines through. */
export function debugLogging(logLevel: string): boolean {
	return logLevel === "debug" || logLevel === "trace";
}

export function requestIdMiddleware(logLevel: string): Middleware {
	const debug = debugLogging(logLevel);
	// A consumer's channel definition names no service: its lines go to the "CHANNELS" module.
	let fallback: Logger | undefined;
	const wrap =
		(kind: string) =>
		(handler: Handler, def: { name?: string; service?: { logger: Logger } }): Handler => {
			const logger = def.service?.logger ?? fallback;
			const inner = debug && logger ? withDebugLines(handler, `${kind} ${def.name}`, logger) : handler;
			return withRequestId(inner) as Handler;
		};
	return {
		name: "RequestId",
		created(broker: { getLogger(mod: string): Logger }) {
			fallback = broker.getLogger("channels");
		},
		localAction: wrap("action"),
		localEvent: wrap("event"),
		// @moleculer/channels' hook: a consumer's Context carries the requestID of the message.
		localChannel: wrap("channel"),
	} as unknown as Middleware;
}

/** Keys whose values never reach a log line. */
const SECRET_KEYS = ["password", "token", "secret", "authorization", "cookie", "jwt", "apiKey", "accessToken", "refreshToken"];
export const REDACT_PATHS = SECRET_KEYS.flatMap(k => [k, `*.${k}`, `*.*.${k}`, `data.*.${k}`, `*.headers.${k}`]);

/**
 * Moleculer passes console-style arguments ("text", err, obj); pino wants (fields, message).
 * Strings make the message, an Error becomes `err` (with its stack), other values `data`.
 */
function consoleArgsToPino(this: unknown, args: unknown[], method: (...a: unknown[]) => void): void {
	const words: string[] = [];
	const fields: { err?: unknown; data?: unknown } = {};
	const data: unknown[] = [];
	for (const a of args) {
		if (a instanceof Error) fields.err ??= a;
		else if (a !== null && typeof a === "object") data.push(a);
		else words.push(String(a));
	}
	if (data.length > 0) fields.data = data.length === 1 ? data[0] : data;
	method.call(this, fields, words.join(" "));
}

export function loggerOptions(config: Pick<Config, "logFormat" | "logLevel">): BrokerOptions["logger"] {
	if (config.logFormat === "json")
		return {
			type: "Pino",
			options: {
				level: config.logLevel,
				pino: {
					options: {
						// level as a word, time as ISO text: readable by people and by log shippers.
						formatters: { level: (label: string) => ({ level: label }) },
						timestamp: () => `,"time":"${new Date().toISOString()}"`,
						base: undefined,
						messageKey: "msg",
						mixin() {
							const requestID = scope.getStore();
							return requestID ? { requestID } : {};
						},
						redact: { paths: REDACT_PATHS, censor: "[redacted]" },
						hooks: { logMethod: consoleArgsToPino },
					},
				},
			},
		} as BrokerOptions["logger"];
	return {
		type: "Console",
		options: {
			level: config.logLevel,
			colors: process.stdout.isTTY,
			moduleColors: false,
			// Moleculer's "short" lines, with the request's id after the module when there is one.
			formatter(this: { opts: { formatter: unknown } }, type: string, args: unknown[], bindings: { mod: string }, { printArgs }: { printArgs(a: unknown[]): unknown[] }) {
				const requestID = scope.getStore();
				return [
					`[${new Date().toISOString().substring(11)}]`,
					type.toUpperCase().padEnd(5),
					`${bindings.mod.toUpperCase()}:`,
					...(requestID ? [`[${requestID}]`] : []),
					...printArgs(args),
				];
			},
		},
	} as BrokerOptions["logger"];
}
