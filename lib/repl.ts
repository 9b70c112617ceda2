/**
 * `npm run repl`: moleculer-runner with the REPL, on the built code (README "The REPL").
 *
 * - TRANSPORTER set and SERVICES unset: a node that runs no service of its own and joins the
 *   running cluster, so that `nodes`, `services`, `call` and `emit` reach the other nodes. It
 *   signs no token, so without JWT_SECRET it gets a random one instead of refusing to start.
 * - Otherwise, as before: the services of SERVICES (every service when unset) from dist/services,
 *   in this process, with the REPL.
 */
import { randomBytes } from "node:crypto";
import path from "node:path";
import { Runner } from "moleculer";

const ROOT = path.resolve(__dirname, "../..");
const env = process.env;

if (env.TRANSPORTER && !env.SERVICES) {
	delete env.SERVICEDIR;
	delete env.SERVICES;
	env.JWT_SECRET ||= randomBytes(32).toString("base64url");
} else {
	env.SERVICEDIR ||= path.join(ROOT, "dist/services");
}

new Runner().start([process.argv[0], process.argv[1], "--config", path.join(ROOT, "dist/moleculer.config.js"), "--repl", ...process.argv.slice(2)]);
