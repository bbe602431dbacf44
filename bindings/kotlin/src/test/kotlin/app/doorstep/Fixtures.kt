package app.doorstep

import app.doorstep.ffi.HukouStatus
import app.doorstep.ffi.NewGuardian
import app.doorstep.ffi.NewHousehold
import app.doorstep.ffi.NewStudent

/** A household assigned to m-zhang, for the tests to create. */
internal fun newHousehold(name: String = "王") = NewHousehold(
    familyName = name,
    address = "平洲路 1 号",
    communityId = "c-pingzhou",
    branchId = "b-3",
    guardians = listOf(NewGuardian(name = "李芳", relation = "母亲", phone = "13800000000")),
    students = listOf(NewStudent("王小明", "平洲小学", "六年级", HukouStatus.NonLocal)),
    assignedMembers = listOf("m-zhang"),
)
