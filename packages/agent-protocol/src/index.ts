export const PACKAGE_NAME = "@supermachine/agent-protocol";
