export const PACKAGE_NAME = "@supermachine/hypervisor";
