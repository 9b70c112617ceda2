/**
 * Every error the gateway can meet, mapped to API.md's error table. Client errors keep their
 * message; anything else becomes a generic body, so no internal detail or stack ever leaves.
 */
import type { FieldError } from "../../lib/errors";

export interface HttpError {
	status: number;
	body: { name: string; message: string; code: number; type: string; data?: unknown };
	retryAfter?: number;
}

interface AnyError {
	name?: string;
	message?: string;
	code?: unknown;
	status?: unknown;
	type?: unknown;
	data?: unknown;
}

const TYPE_BY_STATUS: Record<number, string> = {
	400: "BAD_REQUEST",
	401: "UNAUTHORIZED",
	403: "FORBIDDEN",
	404: "NOT_FOUND",
	405: "METHOD_NOT_ALLOWED",
	413: "PAYLOAD_TOO_LARGE",
	415: "UNSUPPORTED_MEDIA_TYPE",
	422: "VALIDATION_ERROR",
	429: "TOO_MANY_REQUESTS",
	503: "SERVICE_UNAVAILABLE",
};

/** Moleculer's own failures to reach a service: the dependency is unavailable, not the client's fault. */
const UNAVAILABLE = new Set([
	"ServiceNotFoundError",
	"ServiceNotAvailableError",
	"RequestTimeoutError",
	"RequestRejectedError",
	"QueueIsFullError",
	"GracefulStopTimeoutError",
	"BrokerDisconnectedError",
]);

export function toHttpError(err: unknown): HttpError {
	const e = (err ?? {}) as AnyError;

	// body-parser's errors (malformed JSON, too large, bad encoding) have a dotted `type`; moleculer-web
	// passes them on with the parser's status as `code`.
	if (typeof e.type === "string" && /^[a-z]+\.[a-z.]+$/.test(e.type)) {
		const status = typeof e.status === "number" ? e.status : typeof e.code === "number" ? e.code : 400;
		if (status === 413) return make(413, "PayloadTooLargeError", "The request body is larger than 1 MB");
		if (e.type === "entity.parse.failed") return make(400, "BadRequestError", "The request body is not valid JSON", "INVALID_JSON");
		if (e.type === "content.not.json")
			return make(400, "BadRequestError", "The request body must be JSON (Content-Type: application/json)", "INVALID_JSON");
		if (status === 415) return make(415, "UnsupportedMediaTypeError", "Unsupported body encoding or charset");
		return make(400, "BadRequestError", "The request body could not be read");
	}

	if (UNAVAILABLE.has(e.name ?? "")) return make(503, "ServiceUnavailableError", "A service is unavailable, try again shortly");

	const code = typeof e.code === "number" ? e.code : 500;
	if (code === 422) return make(422, "ValidationError", "Validation failed", "VALIDATION_ERROR", fieldErrors(e.data));
	if (code === 429) {
		const retryAfter = Number((e.data as { retryAfter?: number })?.retryAfter) || 60;
		return { ...make(429, "TooManyRequestsError", e.message ?? "Too many requests", "TOO_MANY_REQUESTS"), retryAfter };
	}
	if (code === 503) return make(503, "ServiceUnavailableError", e.message ?? "A dependency is unavailable", "SERVICE_UNAVAILABLE");
	if (code >= 400 && code < 500) {
		// moleculer-web's own 401s say NO_TOKEN/INVALID_TOKEN, its 404 NOT_FOUND: use the contract's
		// types for every status except 409, whose type names the conflict.
		const type = code === 409 && typeof e.type === "string" ? e.type : (TYPE_BY_STATUS[code] ?? "BAD_REQUEST");
		const data = code === 409 ? e.data : undefined;
		return make(code, e.name ?? "ClientError", e.message ?? "Bad request", type, data);
	}
	return make(500, "InternalServerError", "Internal server error", "INTERNAL_ERROR");
}

function make(status: number, name: string, message: string, type = TYPE_BY_STATUS[status], data?: unknown): HttpError {
	const body: HttpError["body"] = { name, message, code: status, type };
	if (data !== undefined) body.data = data;
	return { status, body };
}

/** fastest-validator's entries ({ type, field, message, actual, … }) reduced to { field, message }. */
function fieldErrors(data: unknown): FieldError[] {
	if (!Array.isArray(data)) return [];
	return data.flatMap((d: { type?: unknown; field?: unknown; message?: unknown; actual?: unknown }) => {
		// A strict object names its forbidden keys in `actual`: one entry per key, each its own field.
		if (d.type === "objectStrict" && typeof d.actual === "string") {
			const prefix = typeof d.field === "string" && d.field ? `${d.field}.` : "";
			return d.actual.split(",").map(key => ({ field: prefix + key.trim(), message: `Unknown field '${key.trim()}'` }));
		}
		return [
			{
				field: typeof d.field === "string" && d.field ? d.field : "body",
				message: typeof d.message === "string" ? d.message : "Invalid value",
			},
		];
	});
}
