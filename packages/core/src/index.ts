export const PACKAGE_NAME = "@supermachine/core";
