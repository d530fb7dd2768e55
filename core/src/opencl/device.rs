//! Platform/device discovery and the capabilities we read from a device once.
//!
//! Discovery runs under one process-wide lock ([`DISCOVERY`]): on PoCL, two threads that
//! enumerate devices for the first time at once can both get empty device lists, so every
//! `clGetPlatformIDs` / `clGetDeviceIDs` / `clCreateContext` of this crate is serialized.
//!
//! Finding libOpenCL: opencl3 (through cl3) loads the library at run time, once per
//! process: first every `;`-separated path in `OPENCL_DYLIB_PATH`, then `libOpenCL.so.1`
//! (`OpenCL.dll`, the macOS framework). That is all its loader permits: there is no hook
//! to add search paths. On Android, where the vendor library is not on the default
//! search path, we fill `OPENCL_DYLIB_PATH` with the usual vendor locations before the
//! first OpenCL call (under the lock, only when the user has not set it).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use std::sync::Mutex;

use opencl3::device::{Device, CL_DEVICE_TYPE_ALL, CL_DEVICE_TYPE_CPU};
use opencl3::error_codes::DLOPEN_RUNTIME_LOAD_FAILED;
use opencl3::platform::get_platforms;
use opencl3::types::cl_device_id;

use super::{cl_err, OpenClOptions};
use crate::error::{Error, Result};

/// Serializes first-time platform/device discovery and context creation.
pub(super) static DISCOVERY: Mutex<()> = Mutex::new(());

/// Where Android devices keep their OpenCL library (Adreno: `libOpenCL.so`; Mali:
/// `libOpenCL.so` or the GLES driver itself; PowerVR: `libPVROCL.so`).
#[cfg(target_os = "android")]
const ANDROID_LIBS: &str = "/vendor/lib64/libOpenCL.so;/system/vendor/lib64/libOpenCL.so;\
/system/lib64/libOpenCL.so;/vendor/lib64/egl/libGLES_mali.so;/system/lib64/egl/libGLES_mali.so;\
/vendor/lib64/libPVROCL.so;/vendor/lib/libOpenCL.so;/system/vendor/lib/libOpenCL.so";

fn prepare_loader() {
    #[cfg(target_os = "android")]
    if std::env::var_os("OPENCL_DYLIB_PATH").is_none() {
        // Called with DISCOVERY held, before opencl3 loads the library; the variable is
        // only read by that one-time load.
        std::env::set_var("OPENCL_DYLIB_PATH", ANDROID_LIBS);
    }
}

/// What we learned about a device, once, when the backend was built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub platform_index: usize,
    pub device_index: usize,
    pub platform: String,
    pub name: String,
    pub vendor: String,
    /// `OpenCL 3.0 …`.
    pub version: String,
    pub driver: String,
    /// `CL_DEVICE_TYPE_CPU` (PoCL): work-group sizes are tuned differently.
    pub is_cpu: bool,
    /// `OpenCL C 1.2 …`: the kernels need 1.2.
    pub c_version: String,
    /// `cl_khr_fp16`: half arithmetic in kernels (we only need `vload_half`, which is core).
    pub fp16: bool,
    /// `cl_khr_subgroups` / `cl_intel_subgroups` / `cl_qcom_…` or OpenCL ≥ 2.1 sub-groups.
    pub subgroups: bool,
    /// Images from buffers (`image1d_buffer_t`, Adreno's fast weight path).
    pub image1d_buffer: bool,
    /// `CL_DEVICE_IMAGE_MAX_BUFFER_SIZE`: texels (pixels) an `image1d_buffer_t` may hold
    /// (0 without image support).
    pub image_max_buffer_texels: u64,
    /// `CL_DEVICE_MAX_MEM_ALLOC_SIZE`: the largest single buffer.
    pub max_alloc: u64,
    pub global_mem: u64,
    pub local_mem: u64,
    pub compute_units: u32,
    pub max_work_group: usize,
    /// `CL_DEVICE_MAX_PARAMETER_SIZE`: bytes of kernel arguments a launch may take.
    pub max_parameter_size: usize,
    /// `CL_DEVICE_MEM_BASE_ADDR_ALIGN` in bytes (sub-buffer origins must be multiples).
    pub base_addr_align: u32,
    /// `CL_DEVICE_HOST_UNIFIED_MEMORY`: the device reads host memory directly
    /// (integrated GPUs, PoCL); imports are then zero-copy.
    pub unified_memory: bool,
}

impl core::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "[{}:{}] {} / {} ({}; {}; driver {}; {}) — {} CUs, max alloc {} MiB, global {} MiB, local {} KiB, \
             max work-group {}, base align {} B, unified memory {}, fp16 {}, subgroups {}, image1d_buffer {} ({} texels)",
            self.platform_index,
            self.device_index,
            self.platform,
            self.name,
            self.version,
            self.c_version,
            self.driver,
            if self.is_cpu { "CPU" } else { "GPU/accelerator" },
            self.compute_units,
            self.max_alloc >> 20,
            self.global_mem >> 20,
            self.local_mem >> 10,
            self.max_work_group,
            self.base_addr_align,
            self.unified_memory,
            self.fp16,
            self.subgroups,
            self.image1d_buffer,
            self.image_max_buffer_texels
        )
    }
}

fn read_info(platform_index: usize, platform: String, device_index: usize, d: &Device) -> Result<DeviceInfo> {
    let ext = d.extensions().map_err(cl_err("device extensions"))?;
    let version = d.version().map_err(cl_err("device version"))?;
    let has = |e: &str| ext.split_whitespace().any(|x| x == e);
    // OpenCL ≥ 2.1 core sub-groups are optional in 3.0: a nonzero max count says they exist.
    let core_subgroups = d.max_num_sub_groups().unwrap_or(0) > 0;
    let image_texels = if d.image_support().unwrap_or(false) {
        d.image_max_buffer_size().unwrap_or(0) as u64
    } else {
        0
    };
    Ok(DeviceInfo {
        platform_index,
        device_index,
        platform,
        name: d.name().map_err(cl_err("device name"))?.trim().to_string(),
        vendor: d.vendor().unwrap_or_default().trim().to_string(),
        version: version.trim().to_string(),
        driver: d.driver_version().unwrap_or_default().trim().to_string(),
        is_cpu: d.dev_type().unwrap_or(0) & CL_DEVICE_TYPE_CPU != 0,
        c_version: d.opencl_c_version().unwrap_or_default().trim().to_string(),
        fp16: has("cl_khr_fp16"),
        subgroups: has("cl_khr_subgroups") || has("cl_intel_subgroups") || core_subgroups,
        image1d_buffer: image_texels > 0,
        image_max_buffer_texels: image_texels,
        max_alloc: d.max_mem_alloc_size().map_err(cl_err("max alloc size"))?,
        global_mem: d.global_mem_size().unwrap_or(0),
        local_mem: d.local_mem_size().unwrap_or(0),
        compute_units: d.max_compute_units().unwrap_or(0),
        max_work_group: d.max_work_group_size().map_err(cl_err("max work-group size"))?,
        max_parameter_size: d.max_parameter_size().unwrap_or(1024),
        base_addr_align: d.mem_base_addr_align().unwrap_or(1024) / 8,
        unified_memory: d.host_unified_memory().unwrap_or(false),
    })
}

/// Every OpenCL device this process can see, in (platform, device) order. An empty list
/// when no OpenCL library or platform exists (not an error: the caller falls back to CPU).
pub fn list_devices() -> Result<Vec<DeviceInfo>> {
    let _guard = DISCOVERY.lock().unwrap_or_else(|e| e.into_inner());
    prepare_loader();
    match enumerate() {
        Err(e) if e.kind() == crate::error::ErrorKind::Backend && e.message() == NO_LIBRARY => Ok(Vec::new()),
        r => Ok(r?.into_iter().map(|(info, _)| info).collect()),
    }
}

const NO_LIBRARY: &str = "no OpenCL library found (libOpenCL.so.1; set OPENCL_DYLIB_PATH to point at one)";

/// Enumerates with DISCOVERY held by the caller.
fn enumerate() -> Result<Vec<(DeviceInfo, cl_device_id)>> {
    let platforms = match get_platforms() {
        Ok(p) => p,
        Err(e) if e.0 == DLOPEN_RUNTIME_LOAD_FAILED => return Err(Error::backend("opencl", NO_LIBRARY.to_string())),
        // clGetPlatformIDs reports "no platform" (CL_PLATFORM_NOT_FOUND_KHR) as an error.
        Err(_) => Vec::new(),
    };
    let mut out = Vec::new();
    for (pi, p) in platforms.iter().enumerate() {
        let pname = p.name().unwrap_or_default().trim().to_string();
        let ids = p.get_devices(CL_DEVICE_TYPE_ALL).unwrap_or_default();
        for (di, &id) in ids.iter().enumerate() {
            out.push((read_info(pi, pname.clone(), di, &Device::new(id))?, id));
        }
    }
    Ok(out)
}

/// Picks the device `opts` asks for (with DISCOVERY held by the caller): the first that
/// matches the platform index, device index and name filter (a case-insensitive
/// substring of the platform or device name). Prefers GPUs over CPUs when nothing is
/// specified, by taking the first device whose name does not look like PoCL's CPU
/// device only when there is a choice.
pub(super) fn pick(opts: &OpenClOptions) -> Result<(DeviceInfo, cl_device_id)> {
    prepare_loader();
    let all = enumerate()?;
    if all.is_empty() {
        return Err(Error::backend(
            "opencl",
            "no OpenCL platform or device (is an ICD installed in /etc/OpenCL/vendors?)".to_string(),
        ));
    }
    let filter = opts.name_filter.as_deref().map(str::to_lowercase);
    let matches = |i: &DeviceInfo| {
        opts.platform.is_none_or(|p| p == i.platform_index)
            && opts.device.is_none_or(|d| d == i.device_index)
            && filter
                .as_deref()
                .is_none_or(|f| i.name.to_lowercase().contains(f) || i.platform.to_lowercase().contains(f))
    };
    let mut found: Vec<_> = all.iter().filter(|(i, _)| matches(i)).collect();
    // Prefer a non-CPU device when several match and none was named.
    if opts.device.is_none() && filter.is_none() && found.len() > 1 {
        found.sort_by_key(|(i, _)| i.platform.contains("Portable Computing Language"));
    }
    match found.first() {
        Some((info, id)) => Ok((info.clone(), *id)),
        None => Err(Error::backend(
            "opencl",
            format!(
                "no OpenCL device matches {opts:?}; available: {}",
                all.iter()
                    .map(|(i, _)| format!("[{}:{}] {} / {}", i.platform_index, i.device_index, i.platform, i.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}
