/**
 * Moleculer 0.14 types lifecycle handlers with a plain `Service` as `this`, which knows nothing of
 * a service's methods and mixins: `lifecycle<ProductsThis>(function () { … })` gives the handler
 * its service's own type.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function lifecycle<T>(fn: (this: T) => unknown): (this: any) => any {
	return fn;
}
