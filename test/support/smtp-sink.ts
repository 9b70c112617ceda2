/**
 * A local SMTP sink for tests, on node:net: just enough of RFC 5321 for nodemailer (EHLO, MAIL,
 * RCPT, DATA, RSET, NOOP, QUIT; no TLS, no AUTH), on 127.0.0.1 only. It keeps every message it
 * accepts and relays nothing. A recipient can be refused with a chosen reply ("550 …" for a
 * permanent refusal, "451 …" for a transient one).
 */
import net from "node:net";

export interface SunkMessage {
	/** The envelope (MAIL FROM, RCPT TO), not the headers. */
	from: string;
	to: string[];
	headers: Record<string, string>;
	/** The Subject header, RFC 2047 encoded-words decoded. */
	subject: string;
	/** The body, its transfer encoding (quoted-printable, base64) decoded. */
	text: string;
}

export class SmtpSink {
	readonly messages: SunkMessage[] = [];
	/** Recipient address → the reply to its RCPT TO. */
	readonly refuse = new Map<string, string>();
	private readonly server = net.createServer(socket => this.session(socket));
	private readonly sockets = new Set<net.Socket>();

	get url(): string {
		return `smtp://127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
	}

	async start(): Promise<this> {
		await new Promise<void>((resolve, reject) => {
			this.server.once("error", reject);
			this.server.listen(0, "127.0.0.1", () => resolve());
		});
		return this;
	}

	async stop(): Promise<void> {
		for (const socket of this.sockets) socket.destroy();
		await new Promise<void>(resolve => this.server.close(() => resolve()));
	}

	private session(socket: net.Socket): void {
		this.sockets.add(socket);
		socket.on("close", () => this.sockets.delete(socket));
		socket.on("error", () => undefined);
		socket.setEncoding("latin1");
		const reply = (line: string) => socket.write(`${line}\r\n`);
		let buffer = "";
		let from = "";
		let to: string[] = [];
		let data: string[] | null = null;

		reply("220 sink.test ESMTP test sink");
		socket.on("data", (chunk: string) => {
			buffer += chunk;
			let end: number;
			while ((end = buffer.indexOf("\r\n")) >= 0) {
				const line = buffer.slice(0, end);
				buffer = buffer.slice(end + 2);
				if (data) {
					if (line === ".") {
						this.messages.push(parse(from, to, data));
						data = null;
						reply("250 2.0.0 Queued");
					} else data.push(line.startsWith("..") ? line.slice(1) : line);
					continue;
				}
				const verb = line.slice(0, 4).toUpperCase();
				const address = /<([^>]*)>/.exec(line)?.[1] ?? "";
				if (verb === "EHLO" || verb === "HELO") reply("250 sink.test");
				else if (verb === "MAIL") {
					from = address;
					to = [];
					reply("250 2.1.0 OK");
				} else if (verb === "RCPT") {
					const refusal = this.refuse.get(address.toLowerCase());
					if (refusal) reply(refusal);
					else {
						to.push(address);
						reply("250 2.1.5 OK");
					}
				} else if (verb === "DATA") {
					if (to.length === 0) reply("554 5.5.1 No valid recipients");
					else {
						data = [];
						reply("354 End data with <CR><LF>.<CR><LF>");
					}
				} else if (verb === "RSET") {
					from = "";
					to = [];
					reply("250 2.0.0 OK");
				} else if (verb === "NOOP") reply("250 2.0.0 OK");
				else if (verb === "QUIT") {
					reply("221 2.0.0 Bye");
					socket.end();
				} else reply("502 5.5.2 Command not implemented");
			}
		});
	}
}

function parse(from: string, to: string[], lines: string[]): SunkMessage {
	const blank = lines.indexOf("");
	const headerLines = lines.slice(0, blank < 0 ? lines.length : blank);
	const bodyLines = blank < 0 ? [] : lines.slice(blank + 1);
	const headers: Record<string, string> = {};
	let last = "";
	for (const line of headerLines) {
		if (/^[ \t]/.test(line) && last) headers[last] += line; // folded: RFC 5322 §2.2.3
		else {
			const colon = line.indexOf(":");
			last = line.slice(0, colon).trim().toLowerCase();
			headers[last] = line.slice(colon + 1).trim();
		}
	}
	const encoding = (headers["content-transfer-encoding"] ?? "7bit").toLowerCase();
	let text: string;
	if (encoding === "quoted-printable") text = decodeQuotedPrintable(bodyLines.join("\r\n"));
	else if (encoding === "base64") text = Buffer.from(bodyLines.join(""), "base64").toString("utf8");
	else text = Buffer.from(bodyLines.join("\r\n"), "latin1").toString("utf8");
	return { from, to, headers, subject: decodeWords(headers.subject ?? ""), text: text.replace(/\r\n/g, "\n") };
}

/** RFC 2045 §6.7: soft line breaks removed, =XX bytes decoded as UTF-8. */
function decodeQuotedPrintable(input: string): string {
	const joined = input.replace(/=\r\n/g, "");
	const bytes: number[] = [];
	for (let i = 0; i < joined.length; i++) {
		if (joined[i] === "=" && /^[0-9A-Fa-f]{2}$/.test(joined.slice(i + 1, i + 3))) {
			bytes.push(parseInt(joined.slice(i + 1, i + 3), 16));
			i += 2;
		} else bytes.push(joined.charCodeAt(i) & 0xff);
	}
	return Buffer.from(bytes).toString("utf8");
}

/** RFC 2047 encoded-words (=?UTF-8?Q?…?= and =?UTF-8?B?…?=); the space between two of them is dropped. */
function decodeWords(value: string): string {
	return value
		.replace(/(\?=)\s+(=\?)/g, "$1$2")
		.replace(/=\?([^?]+)\?([QqBb])\?([^?]*)\?=/g, (_m, _charset: string, kind: string, text: string) =>
			kind.toUpperCase() === "B" ? Buffer.from(text, "base64").toString("utf8") : decodeQuotedPrintable(text.replace(/_/g, " ")),
		);
}
