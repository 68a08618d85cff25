// The classifier lives in @postroom/db since every service's start-up uses it too.
export { isDatabaseUnavailable } from "@postroom/db";
