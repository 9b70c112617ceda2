/**
 * Domain errors with the status codes and types of API.md's error table.
 * They cross nodes as { name, message, code, type, data }, so the gateway maps on code and type,
 * never on the class.
 */
import { Errors } from "moleculer";

const { MoleculerClientError, MoleculerError, MoleculerRetryableError } = Errors;

export interface FieldError {
	field: string;
	message: string;
}

export class NotFoundError extends MoleculerClientError {
	constructor(what = "Resource", id?: string | number) {
		super(id === undefined ? `${what} not found` : `${what} ${id} not found`, 404, "NOT_FOUND");
		this.name = "NotFoundError";
	}
}

export class UnauthorizedError extends MoleculerClientError {
	constructor(message = "Authentication required") {
		super(message, 401, "UNAUTHORIZED");
		this.name = "UnauthorizedError";
	}
}

export class ForbiddenError extends MoleculerClientError {
	constructor(message = "You are not allowed to do this") {
		super(message, 403, "FORBIDDEN");
		this.name = "ForbiddenError";
	}
}

export class ConflictError extends MoleculerClientError {
	constructor(message: string, type: string, data?: unknown) {
		super(message, 409, type, data);
		this.name = "ConflictError";
	}
}

export class EmailTakenError extends ConflictError {
	constructor() {
		super("This email is already registered", "EMAIL_TAKEN", { field: "email" });
	}
}

export class SkuTakenError extends ConflictError {
	constructor(sku: string) {
		super(`SKU ${sku} is already in use`, "SKU_TAKEN", { field: "sku" });
	}
}

export class OutOfStockError extends ConflictError {
	constructor(productId: number, requested?: number) {
		super(`Product ${productId} does not have enough stock`, "OUT_OF_STOCK", { productId, requested });
	}
}

/** 422 with the failing fields, the same shape the gateway gives fastest-validator's errors. */
export class ValidationFailedError extends MoleculerClientError {
	constructor(errors: FieldError[]) {
		super("Validation failed", 422, "VALIDATION_ERROR", errors);
		this.name = "ValidationError";
	}
}

export class TooManyRequestsError extends MoleculerClientError {
	constructor(public readonly retryAfterSeconds: number) {
		super("Too many requests, try again later", 429, "TOO_MANY_REQUESTS", { retryAfter: retryAfterSeconds });
		this.name = "TooManyRequestsError";
	}
}

/**
 * A dependency (database, broker) is unavailable: 503. Not retryable inside the cluster: the
 * client gets a fast, clear answer and decides when to try again.
 */
export class ServiceUnavailableError extends MoleculerError {
	constructor(message = "A dependency is unavailable, try again shortly") {
		super(message, 503, "SERVICE_UNAVAILABLE");
		this.name = "ServiceUnavailableError";
	}
}

/**
 * A business event whose payload does not have the shape lib/events.ts gives it. Not retryable:
 * the same message fails the same way, so its consumer lets it go to the dead-letter queue, where
 * an operator can read it.
 */
export class InvalidEventError extends MoleculerError {
	constructor(event: string, errors: FieldError[]) {
		super(`The ${event} event is malformed`, 422, "INVALID_EVENT", errors);
		this.name = "InvalidEventError";
	}
}

/**
 * A consumer could not finish with an event yet (a channel or a service it needs is down, or
 * another delivery of the same event is still in flight): the message is to be delivered again
 * later, and its handler is idempotent.
 */
export class EventDeferredError extends MoleculerRetryableError {
	constructor(message: string, data?: unknown) {
		super(message, 503, "EVENT_DEFERRED", data);
		this.name = "EventDeferredError";
	}
}
