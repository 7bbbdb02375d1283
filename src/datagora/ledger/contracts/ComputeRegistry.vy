# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title ComputeRegistry
@notice The on-chain record of compute-to-data: algorithms published by hash,
        each dataset's trusted algorithms, and every job — which consumer ran
        which algorithm with which parameters on which dataset version, whether
        the owner approved it, and the hash of the result. Which model came from
        which data is read from here.

        A job is recorded by the dataset's controller or by an operator the
        controller named (the owner's compute node), and only after the
        consumer holds a valid order for the dataset's compute service.
"""

interface IDataNFT:
    def controller(dataset: uint256) -> address: view
    def datatoken_of(dataset: uint256) -> address: view


interface IDatatoken:
    def has_valid_order(consumer: address, service_id: uint256) -> bool: view


STATUS_PENDING: constant(uint8) = 1  # waiting for the owner's review
STATUS_APPROVED: constant(uint8) = 2  # trusted algorithm or approved: may run
STATUS_DENIED: constant(uint8) = 3
STATUS_SUCCEEDED: constant(uint8) = 4
STATUS_FAILED: constant(uint8) = 5

DATA_NFT: public(immutable(address))

# algorithm hash -> who published it (zero: not published)
algorithm_publisher: public(HashMap[bytes32, address])
# dataset -> algorithm hash -> trusted
trusted: public(HashMap[uint256, HashMap[bytes32, bool]])
# dataset -> account -> may record and settle jobs for the dataset
operator: public(HashMap[uint256, HashMap[address, bool]])

job_count: public(uint256)


struct Job:
    dataset: uint256
    version: uint256
    service_id: uint256
    consumer: address
    algorithm: bytes32
    params: bytes32
    status: uint8
    result: bytes32


jobs: public(HashMap[uint256, Job])


event AlgorithmPublished:
    algorithm: indexed(bytes32)
    publisher: indexed(address)
    uri: String[432]


event TrustedAlgorithmChanged:
    dataset: indexed(uint256)
    algorithm: indexed(bytes32)
    trusted: bool


event OperatorChanged:
    dataset: indexed(uint256)
    operator: indexed(address)
    allowed: bool


event JobRecorded:
    job: indexed(uint256)
    dataset: indexed(uint256)
    consumer: indexed(address)
    version: uint256
    service_id: uint256
    algorithm: bytes32
    params: bytes32
    status: uint8


event JobDecided:
    job: indexed(uint256)
    dataset: indexed(uint256)
    approved: bool
    reason: String[256]


event JobCompleted:
    job: indexed(uint256)
    dataset: indexed(uint256)
    succeeded: bool
    result: bytes32
    epsilon_milli: uint256
    note: String[256]


@deploy
def __init__(data_nft: address):
    DATA_NFT = data_nft


@internal
@view
def _check_operator(dataset: uint256):
    assert msg.sender == staticcall IDataNFT(DATA_NFT).controller(dataset) or self.operator[dataset][msg.sender], "datagora: not controller"


@external
def publish_algorithm(algorithm: bytes32, uri: String[432]):
    """
    @notice Publish an algorithm asset: its SHA-256 and where its code is.
    """
    assert algorithm != empty(bytes32), "datagora: empty algorithm hash"
    assert self.algorithm_publisher[algorithm] == empty(address), "datagora: algorithm exists"
    self.algorithm_publisher[algorithm] = msg.sender
    log AlgorithmPublished(algorithm=algorithm, publisher=msg.sender, uri=uri)


@external
def set_trusted(dataset: uint256, algorithm: bytes32, trusted_: bool):
    """
    @notice Allow (or stop allowing) `algorithm` on `dataset` without review. Controller only.
    """
    assert msg.sender == staticcall IDataNFT(DATA_NFT).controller(dataset), "datagora: not controller"
    assert algorithm != empty(bytes32), "datagora: empty algorithm hash"
    self.trusted[dataset][algorithm] = trusted_
    log TrustedAlgorithmChanged(dataset=dataset, algorithm=algorithm, trusted=trusted_)


@external
def set_operator(dataset: uint256, operator_: address, allowed: bool):
    """
    @notice Let `operator_` (the owner's compute node) record and settle jobs. Controller only.
    """
    assert msg.sender == staticcall IDataNFT(DATA_NFT).controller(dataset), "datagora: not controller"
    assert operator_ != empty(address), "datagora: zero address"
    self.operator[dataset][operator_] = allowed
    log OperatorChanged(dataset=dataset, operator=operator_, allowed=allowed)


@external
def record_job(dataset: uint256, version: uint256, service_id: uint256, consumer: address, algorithm: bytes32, params: bytes32) -> uint256:
    """
    @notice Record a job the consumer asked for. It starts approved when the
            algorithm is trusted for the dataset, pending review otherwise.
    @return The job id.
    """
    self._check_operator(dataset)
    assert algorithm != empty(bytes32), "datagora: empty algorithm hash"
    token: address = staticcall IDataNFT(DATA_NFT).datatoken_of(dataset)
    assert staticcall IDatatoken(token).has_valid_order(consumer, service_id), "datagora: no valid order"
    status: uint8 = STATUS_PENDING
    if self.trusted[dataset][algorithm]:
        status = STATUS_APPROVED
    job: uint256 = self.job_count + 1
    self.job_count = job
    self.jobs[job] = Job(
        dataset=dataset, version=version, service_id=service_id, consumer=consumer,
        algorithm=algorithm, params=params, status=status, result=empty(bytes32),
    )
    log JobRecorded(job=job, dataset=dataset, consumer=consumer, version=version, service_id=service_id, algorithm=algorithm, params=params, status=status)
    return job


@external
def decide(job: uint256, approved: bool, reason: String[256]):
    """
    @notice The owner's review of a pending job.
    """
    dataset: uint256 = self.jobs[job].dataset
    assert dataset != 0, "datagora: no such job"
    self._check_operator(dataset)
    assert self.jobs[job].status == STATUS_PENDING, "datagora: job not pending"
    self.jobs[job].status = STATUS_APPROVED if approved else STATUS_DENIED
    log JobDecided(job=job, dataset=dataset, approved=approved, reason=reason)


@external
def complete(job: uint256, succeeded: bool, result: bytes32, epsilon_milli: uint256, note: String[256]):
    """
    @notice Settle an approved job: the hash of its (encrypted) result, or its failure.
    """
    dataset: uint256 = self.jobs[job].dataset
    assert dataset != 0, "datagora: no such job"
    self._check_operator(dataset)
    assert self.jobs[job].status == STATUS_APPROVED, "datagora: job not approved"
    assert not succeeded or result != empty(bytes32), "datagora: empty result hash"
    self.jobs[job].status = STATUS_SUCCEEDED if succeeded else STATUS_FAILED
    self.jobs[job].result = result
    log JobCompleted(job=job, dataset=dataset, succeeded=succeeded, result=result, epsilon_milli=epsilon_milli, note=note)
