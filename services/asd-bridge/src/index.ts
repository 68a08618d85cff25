export { AsdBridge } from "./bridge.js";
export type { BridgeOptions } from "./bridge.js";
export { route } from "./routing.js";
export type { RouteDecision } from "./routing.js";
export { BuiltinDistributor } from "./builtin-distributor.js";
export { SessionStore } from "./sessions.js";
