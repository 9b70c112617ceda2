/**
 * The request scope (lib/request-scope): the id follows a request through every promise job it
 * leads to, also while other requests interleave with it, and nowhere else.
 */
import { promises as fs } from "node:fs";
import net from "node:net";
import { requestScope as scope } from "../../lib/request-scope";

const tick = () => new Promise<void>(resolve => setTimeout(resolve, 1));

/** An answer that comes back from a real socket: an I/O callback resolves the promise. */
async function echo(server: net.Server, text: string): Promise<string> {
	const { port } = server.address() as net.AddressInfo;
	return new Promise((resolve, reject) => {
		const socket = net.connect(port, "127.0.0.1", () => socket.end(text));
		let got = "";
		socket.on("data", d => (got += d));
		socket.on("end", () => resolve(got));
		socket.on("error", reject);
	});
}

let server: net.Server;
beforeAll(async () => {
	server = net.createServer(s => s.pipe(s));
	await new Promise<void>(resolve => server.listen(0, "127.0.0.1", resolve));
});
afterAll(() => new Promise<void>(resolve => server.close(() => resolve())));

async function handle(id: string, seen: Array<[string, string | undefined]>): Promise<void> {
	seen.push([`${id} sync`, scope.getStore()]);
	await tick();
	seen.push([`${id} after a timer`, scope.getStore()]);
	await echo(server, id);
	seen.push([`${id} after a socket`, scope.getStore()]);
	await fs.stat(__filename);
	seen.push([`${id} after the file system`, scope.getStore()]);
	await Promise.all([1, 2].map(async n => {
		await tick();
		seen.push([`${id} in branch ${n}`, scope.getStore()]);
	}));
	await Promise.resolve().then(() => seen.push([`${id} in a then`, scope.getStore()]));
	seen.push([`${id} at the end`, scope.getStore()]);
}

it("follows each request through timers, sockets, the file system and Promise.all, with requests interleaved", async () => {
	const seen: Array<[string, string | undefined]> = [];
	await Promise.all(["req-a", "req-b", "req-c"].map(id => scope.run(id, handle, id, seen)));
	expect(seen).toHaveLength(3 * 8);
	for (const [what, id] of seen) expect([what, id]).toEqual([what, what.split(" ")[0]]);
});

it("is empty outside a request, also in the jobs of promises made outside one", async () => {
	expect(scope.getStore()).toBeUndefined();
	const outside = tick();
	const inside = scope.run("req-d", async () => {
		await outside;
		return scope.getStore();
	});
	expect(scope.getStore()).toBeUndefined();
	await outside.then(() => expect(scope.getStore()).toBeUndefined());
	expect(await inside).toBe("req-d");
	expect(scope.getStore()).toBeUndefined();
});

it("restores the outer request after an inner one, and names one in a timer's callback that runs it", async () => {
	const seen: Array<string | undefined> = [];
	await scope.run("outer", async () => {
		await scope.run("inner", async () => {
			await tick();
			seen.push(scope.getStore());
		});
		seen.push(scope.getStore());
		await new Promise<void>(resolve =>
			setTimeout(() => {
				// A timer is not a promise job: LeanTimeout's warning runs its request itself.
				scope.run("wrapped", () => seen.push(scope.getStore()));
				resolve();
			}, 1),
		);
		seen.push(scope.getStore());
	});
	expect(seen).toEqual(["inner", "outer", "wrapped", "outer"]);
});
