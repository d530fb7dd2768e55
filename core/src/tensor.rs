//! Shapes and tensor views.
//!
//! A tensor here is a *view*: a backend buffer, a byte offset into it, a dtype and a
//! row-major contiguous shape (outermost dimension first, as in PyTorch; the last
//! dimension is the row). Views never own memory; buffers are owned by whoever allocated
//! them (the model's weights, its run state, the KV cache). `TensorRef` borrows its
//! buffer shared, `TensorMut` exclusively, so Rust's borrow rules rule out an op whose
//! output aliases one of its inputs.

use alloc::format;
use alloc::string::String;
use core::fmt;

use crate::backend::Backend;
use crate::dtype::DType;

/// A row-major shape of rank 1 to 4.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    dims: [usize; 4],
    rank: u8,
}

impl Shape {
    /// Builds a shape; panics if `dims` is empty or longer than 4 (a programming error,
    /// never user input: loaders validate ranks before they build shapes).
    pub fn new(dims: &[usize]) -> Shape {
        assert!(!dims.is_empty() && dims.len() <= 4, "rank must be 1..=4");
        let mut d = [1usize; 4];
        d[..dims.len()].copy_from_slice(dims);
        Shape {
            dims: d,
            rank: dims.len() as u8,
        }
    }
    pub fn d1(a: usize) -> Shape {
        Shape::new(&[a])
    }
    pub fn d2(a: usize, b: usize) -> Shape {
        Shape::new(&[a, b])
    }
    pub fn d3(a: usize, b: usize, c: usize) -> Shape {
        Shape::new(&[a, b, c])
    }
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank as usize]
    }
    pub fn rank(&self) -> usize {
        self.rank as usize
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.dims().iter().product()
    }
    /// Length of the innermost dimension (one row).
    pub fn row_len(&self) -> usize {
        self.dims[self.rank as usize - 1]
    }
    /// Number of rows (product of all but the last dimension).
    pub fn rows(&self) -> usize {
        self.dims()[..self.rank() - 1].iter().product()
    }
    pub fn describe(&self) -> String {
        format!("{self:?}")
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.dims()).finish()
    }
}

/// A read-only view of a tensor stored in a backend buffer.
pub struct TensorRef<'a, B: Backend + ?Sized> {
    pub buf: &'a B::Buffer,
    /// Byte offset of element 0 inside `buf`.
    pub offset: usize,
    pub dtype: DType,
    pub shape: Shape,
}

impl<B: Backend + ?Sized> Clone for TensorRef<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend + ?Sized> Copy for TensorRef<'_, B> {}

/// A writable view of a tensor stored in a backend buffer.
pub struct TensorMut<'a, B: Backend + ?Sized> {
    pub buf: &'a mut B::Buffer,
    pub offset: usize,
    pub dtype: DType,
    pub shape: Shape,
}

/// Bytes a tensor of `dtype` and `shape` occupies, or `None` if rows are not whole blocks.
pub fn tensor_bytes(dtype: DType, shape: Shape) -> Option<usize> {
    dtype.row_bytes(shape.row_len())?.checked_mul(shape.rows())
}

impl<'a, B: Backend + ?Sized> TensorRef<'a, B> {
    pub fn new(buf: &'a B::Buffer, offset: usize, dtype: DType, shape: Shape) -> Self {
        TensorRef {
            buf,
            offset,
            dtype,
            shape,
        }
    }
    /// Bytes covered by the view (0 if rows are not whole blocks; the op layer rejects that).
    pub fn nbytes(&self) -> usize {
        tensor_bytes(self.dtype, self.shape).unwrap_or(0)
    }
    /// A view of rows `start..start+n` of a 2-D (or flattened) tensor.
    pub fn rows(&self, start: usize, n: usize) -> Self {
        let rb = self.dtype.row_bytes(self.shape.row_len()).unwrap_or(0);
        TensorRef {
            buf: self.buf,
            offset: self.offset + start * rb,
            dtype: self.dtype,
            shape: Shape::d2(n, self.shape.row_len()),
        }
    }
    /// The same bytes seen with another shape of equal element count.
    pub fn reshape(&self, shape: Shape) -> Self {
        debug_assert_eq!(shape.numel(), self.shape.numel());
        TensorRef { shape, ..*self }
    }
}

impl<'a, B: Backend + ?Sized> TensorMut<'a, B> {
    pub fn new(buf: &'a mut B::Buffer, offset: usize, dtype: DType, shape: Shape) -> Self {
        TensorMut {
            buf,
            offset,
            dtype,
            shape,
        }
    }
    pub fn nbytes(&self) -> usize {
        tensor_bytes(self.dtype, self.shape).unwrap_or(0)
    }
    /// Reborrows as a read-only view.
    pub fn as_ref(&self) -> TensorRef<'_, B> {
        TensorRef {
            buf: self.buf,
            offset: self.offset,
            dtype: self.dtype,
            shape: self.shape,
        }
    }
    /// Reborrows mutably (for passing to an op without giving the view away).
    pub fn reborrow(&mut self) -> TensorMut<'_, B> {
        TensorMut {
            buf: self.buf,
            offset: self.offset,
            dtype: self.dtype,
            shape: self.shape,
        }
    }
    pub fn reshape(self, shape: Shape) -> Self {
        debug_assert_eq!(shape.numel(), self.shape.numel());
        TensorMut { shape, ..self }
    }
    /// A writable view of rows `start..start+n` of `row_len` elements each (e.g. cache
    /// slots of a `[capacity, heads, head_dim]` tensor with `row_len = heads * head_dim`).
    pub fn rows_mut(&mut self, start: usize, n: usize, row_len: usize) -> TensorMut<'_, B> {
        let rb = self.dtype.row_bytes(row_len).unwrap_or(0);
        TensorMut {
            buf: self.buf,
            offset: self.offset + start * rb,
            dtype: self.dtype,
            shape: Shape::d2(n, row_len),
        }
    }
}
