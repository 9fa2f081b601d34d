export const PACKAGE_NAME = "@supermachine/pool";
