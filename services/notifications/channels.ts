/**
 * Where a notification goes out: the log (the default) or email over SMTP (SMTP_URL). A channel
 * only sends; recording and retrying are the service's. A channel that fails says whether trying
 * again could help (SendError.permanent).
 */
import nodemailer, { type Transporter } from "nodemailer";
import type { LoggerInstance } from "moleculer";
import type { ChannelName } from "./model";

export interface Recipient {
	userId: number;
	email?: string;
}

export interface NotificationChannel {
	name: ChannelName;
	send(to: Recipient, subject: string, body: string): Promise<void>;
	close?(): Promise<void>;
}

/**
 * A send that failed. `permanent`: the same send would fail again (the server refused the address
 * or the message), so the notification is recorded as failed; otherwise (connection refused, a
 * timeout, a 4xx answer) it is tried again later.
 */
export class SendError extends Error {
	constructor(
		message: string,
		readonly permanent: boolean,
		options?: { cause?: unknown },
	) {
		super(message, options);
		this.name = "SendError";
	}
}

export function isPermanentSendError(err: unknown): boolean {
	return err instanceof SendError && err.permanent;
}

/** One line per notification in the service's log. Never fails. */
export class LogChannel implements NotificationChannel {
	readonly name = "log" as const;

	constructor(private readonly logger: Pick<LoggerInstance, "info">) {}

	async send(to: Recipient, subject: string): Promise<void> {
		this.logger.info(`Notification for user ${to.userId}${to.email ? ` <${to.email}>` : ""}: ${subject}`);
	}
}

export interface EmailChannelOptions {
	/** `smtp://[user:pass@]host:port` or `smtps://…`. */
	url: string;
	from: string;
	/** Connection, greeting and socket timeouts of one send. */
	timeoutMs: number;
}

/** Plain-text mail through nodemailer's SMTP transport, one connection per send. */
export class EmailChannel implements NotificationChannel {
	readonly name = "email" as const;
	private readonly transport: Transporter;

	constructor(private readonly options: EmailChannelOptions) {
		this.transport = nodemailer.createTransport({
			url: options.url,
			connectionTimeout: options.timeoutMs,
			greetingTimeout: options.timeoutMs,
			socketTimeout: options.timeoutMs,
		});
	}

	async send(to: Recipient, subject: string, body: string): Promise<void> {
		if (!to.email) throw new SendError(`User ${to.userId} has no email address`, true);
		try {
			await this.transport.sendMail({ from: this.options.from, to: to.email, subject, text: body });
		} catch (err) {
			throw new SendError(`SMTP: ${(err as Error).message}`, isPermanentSmtpError(err), { cause: err });
		}
	}

	async close(): Promise<void> {
		this.transport.close();
	}
}

/**
 * An SMTP 5xx answer is final (RFC 5321 §4.2.1: "do not repeat the exact request"), and so is an
 * envelope nodemailer refuses before it talks to the server (no valid recipient). 4xx answers and
 * connection failures are transient.
 */
function isPermanentSmtpError(err: unknown): boolean {
	const e = err as { responseCode?: number; code?: string };
	if (typeof e.responseCode === "number") return e.responseCode >= 500 && e.responseCode < 600;
	return e.code === "EENVELOPE";
}
