// Hooks both pages use.
import { useState, useEffect } from "/vendor/preact-htm.js";
import { auth } from "./api.js";

/** The signed-in user and token; follows logins and logouts in this tab and in others. */
export function useAuth() {
	const [value, setValue] = useState(auth.get());
	useEffect(() => {
		const on = () => setValue(auth.get());
		window.addEventListener("carsi-auth", on);
		window.addEventListener("storage", on);
		return () => {
			window.removeEventListener("carsi-auth", on);
			window.removeEventListener("storage", on);
		};
	}, []);
	return value;
}
